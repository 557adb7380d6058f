"""MQTT topic names of DESIGN.md 3, for one prefix and one device.

    <p>/dev/<id>/hello   device -> aggregator   Hello        QoS 1
    <p>/dev/<id>/blk     device -> aggregator   sync message QoS 1
    <p>/dev/<id>/ack     aggregator -> device   Ack          QoS 1
    <p>/dev/<id>/state   device, retained, will State        QoS 0
    <p>/dev/<id>/cons    device -> aggregator   ConsistencyRequest  QoS 1
    <p>/dev/<id>/proof   aggregator -> device   ConsistencyProof    QoS 1
    <p>/checkpoint       aggregator, retained   checkpoint note text QoS 1

`cons` and `proof` are ours (DESIGN.md 3 leaves the consistency proof's channel
open; see edgeledger.sync.messages for why a topic). Every device topic sits under
`<p>/dev/<id>/`, so one broker ACL pattern confines each device to its own id:
`pattern write <p>/dev/%u/#` with the device id as its MQTT user name, proven by its
password or client certificate (`%c`, the client id, is chosen by the client and
confines nothing; see docs/mosquitto/edgeledger.acl).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeledger.core.block import valid_device_id
from edgeledger.core.errors import DecodeError

DEFAULT_PREFIX = "edgeledger/v1"
MAX_PREFIX = 128
DEVICE_KINDS = ("hello", "blk", "ack", "state", "cons", "proof", "rotate", "drop")
"""The last level of a device topic."""
TO_AGGREGATOR = ("hello", "blk", "state", "cons", "rotate", "drop")
"""Device topics the aggregator subscribes to (as `<p>/dev/+/<kind>`)."""
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def valid_prefix(prefix: object) -> bool:
    """A topic prefix: 1..128 characters, levels of `[A-Za-z0-9._-]+` joined by '/'.

    This rules out the wildcards `+` and `#`, empty levels, a leading `$` (the
    broker's own `$SYS` and `$share` space) and anything an ACL pattern would
    need to escape.
    """
    return (isinstance(prefix, str) and 0 < len(prefix) <= MAX_PREFIX
            and all(_SEGMENT.fullmatch(level) for level in prefix.split("/")))


def check_prefix(prefix: str) -> str:
    """Return `prefix` if valid, else raise DecodeError saying what a prefix is."""
    if not valid_prefix(prefix):
        raise DecodeError(f"MQTT topic prefix {prefix!r}: must be 1..{MAX_PREFIX} characters "
                          "of levels [A-Za-z0-9._-]+ joined by '/'")
    return prefix


def check_device(device: str) -> str:
    """Return `device` if it is a valid device id, else raise DecodeError."""
    if not valid_device_id(device):
        raise DecodeError(f"device id {device!r}: must match [a-z0-9][a-z0-9-]{{0,63}}")
    return device


def checkpoint_topic(prefix: str = DEFAULT_PREFIX) -> str:
    """`<p>/checkpoint`: the aggregator's latest checkpoint, retained."""
    return f"{check_prefix(prefix)}/checkpoint"


def aggregator_subscriptions(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Topic filters the aggregator subscribes to: `<p>/dev/+/<kind>` for each inbound kind."""
    check_prefix(prefix)
    return [f"{prefix}/dev/+/{kind}" for kind in TO_AGGREGATOR]


@dataclass(frozen=True)
class DeviceTopics:
    """The topics of one device under one prefix; both are checked on construction."""

    device: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_device(self.device)
        check_prefix(self.prefix)

    def _topic(self, kind: str) -> str:
        return f"{self.prefix}/dev/{self.device}/{kind}"

    @property
    def hello(self) -> str:
        """Device -> aggregator: Hello on every connect."""
        return self._topic("hello")

    @property
    def blk(self) -> str:
        """Device -> aggregator: one sync message (DESIGN.md 2.2) per publish."""
        return self._topic("blk")

    @property
    def ack(self) -> str:
        """Aggregator -> device: Ack for each block received."""
        return self._topic("ack")

    @property
    def state(self) -> str:
        """Device, retained and last will: State."""
        return self._topic("state")

    @property
    def cons(self) -> str:
        """Device -> aggregator: ConsistencyRequest between two checkpoint sizes."""
        return self._topic("cons")

    @property
    def proof(self) -> str:
        """Aggregator -> device: ConsistencyProof answering a request."""
        return self._topic("proof")

    @property
    def drop(self) -> str:
        """Device -> aggregator: a signed DROP record (edgeledger/core/droprecord.py)."""
        return self._topic("drop")

    @property
    def checkpoint(self) -> str:
        """`<p>/checkpoint`, shared by all devices."""
        return checkpoint_topic(self.prefix)

    def subscriptions(self) -> list[str]:
        """What the device subscribes to: its ack and proof topics and the checkpoint."""
        return [self.ack, self.proof, self.checkpoint]


def parse_device_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str]:
    """Split `<p>/dev/<id>/<kind>` into (device id, kind); DecodeError for anything else.

    The aggregator uses this to learn which device a message came from: the topic,
    which the broker's ACL ties to the client, not the payload, names the device.
    """
    check_prefix(prefix)
    head = f"{prefix}/dev/"
    if not isinstance(topic, str) or not topic.startswith(head):
        raise DecodeError(f"MQTT topic {str(topic)[:80]!r}: not under {head!r}")
    parts = topic[len(head):].split("/")
    if len(parts) != 2 or parts[1] not in DEVICE_KINDS:
        raise DecodeError(f"MQTT topic {topic[:80]!r}: expected {head}<id>/<kind> with kind "
                          f"one of {', '.join(DEVICE_KINDS)}")
    return check_device(parts[0]), parts[1]
