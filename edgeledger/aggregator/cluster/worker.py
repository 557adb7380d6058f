"""An ingest worker: verifies what its share of the devices' messages says, queues blocks.

Theory of operation. Workers share the devices' topics through an MQTT 5 shared
subscription (`$share/<group>/<prefix>/dev/+/<kind>`): the broker hands each
message to one of them. For a batch of messages a worker

- checks every `blk` with the stateless checks (verify.py), reading the devices'
  enrolled keys in one query; a refusal is journalled and answered `rejected`
  by the worker; a block at a height whose committed block has the same hash is
  answered `dup` with its log index (committed state: the answer is true whoever
  is sequencer); every other verified block is queued (queue.py) for the
  sequencer, which answers it after its append commits;
- forwards `hello` and `drop` (within their size caps) to the sequencer through
  the `requests` table: their answers state the device's next height, and only
  the sequencer's are ordered with its block acks. A worker answering a hello
  from committed state could be overtaken by the sequencer: its `gap` (next 5)
  would reach the device after an `ok` for block 5, which the device must take
  for an aggregator that lost a block;
- hands every other message (`cons`, `rotate`, `state`, bad topics, oversized
  requests) to an AggregatorSync over the same store, exactly as the one-process
  aggregator does: those answers read only committed state that cannot go back
  (stored hashes up to the latest checkpoint), say nothing (`rotate`, `state`),
  or are refusals. It never signs: its checkpointer is only read, after
  refreshing the latest checkpoint from the store, for the sizes `cons` may ask
  about and the note an ack carries.

The queue insert, the events of the refusals and the NOTIFY that wakes the
sequencer are one transaction; the worker's own answers are published after its
COMMIT, so a `dup` or `rejected` journalled is never lost and never contradicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgeledger.aggregator.checkpointer import Checkpointer
from edgeledger.aggregator.cluster import queue
from edgeledger.aggregator.cluster.verify import Refusal, Verified, verify_message
from edgeledger.aggregator.ingest import Ingest, IngestPolicy
from edgeledger.aggregator.log import CanonicalLog
from edgeledger.aggregator.service import AggregatorSync
from edgeledger.aggregator.store.postgres import PostgresStore
from edgeledger.core.checkpoint import Checkpoint
from edgeledger.core.droprecord import MAX_DROP
from edgeledger.core.errors import DecodeError
from edgeledger.core.note import Signer
from edgeledger.sync.device import Publish
from edgeledger.sync.messages import MAX_HELLO, Ack
from edgeledger.sync.topics import DeviceTopics, aggregator_subscriptions, parse_device_topic

if TYPE_CHECKING:
    from edgeledger.aggregator.api.metrics import Metrics

QOS_SYNC = 1
SEQUENCED = {"hello": MAX_HELLO, "drop": MAX_DROP}
"""Kinds the sequencer answers (see the module doc), with their size caps."""


def shared_subscriptions(prefix: str, group: str) -> list[str]:
    """The workers' topic filters: each of the aggregator's, shared by `group`."""
    return [f"$share/{group}/{f}" for f in aggregator_subscriptions(prefix)]


class Worker:
    """Handles batches of received messages on one store connection; see the module doc."""

    def __init__(self, store: PostgresStore, signer: Signer, name: str, prefix: str,
                 policy: IngestPolicy, metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.name = name
        self.prefix = prefix
        self.policy = policy
        self.log = CanonicalLog(store, signer)
        self.sync = AggregatorSync(Ingest(self.log, store, policy), Checkpointer(self.log),
                                   prefix)
        self.queued = 0
        self.answered = 0

    def handle(self, messages: Sequence[tuple[str, bytes]], now: int) -> list[Publish]:
        """One batch of (topic, payload) in arrival order; what to publish, after COMMIT."""
        blocks: list[tuple[str, bytes]] = []
        other: list[tuple[str, bytes]] = []
        requests: list[queue.Request] = []
        for topic, payload in messages:
            try:
                dev, kind = parse_device_topic(topic, self.prefix)
            except DecodeError:
                other.append((topic, payload))  # AggregatorSync journals `bad-topic`
                continue
            if kind == "blk":
                blocks.append((dev, payload))
            elif len(payload) <= SEQUENCED.get(kind, -1):
                requests.append((dev, kind, payload))
            else:
                other.append((topic, payload))
        out = self._blocks(blocks, requests, now)
        if other:
            self._refresh_checkpoint()
            out += self.sync.receive_many(other, now)
        return out

    def _blocks(self, blocks: list[tuple[str, bytes]], requests: list[queue.Request],
                now: int) -> list[Publish]:
        if not blocks:
            queue.enqueue(self.store, self.name, now, [], [], requests)
            return []
        devices = self.store.devices_for(sorted({dev for dev, _ in blocks}))
        verified: list[Verified] = []
        events: list[queue.EventTuple] = []
        acks: list[tuple[str, Ack]] = []
        answered: list[tuple[str, bytes]] = []
        for dev, message in blocks:
            record = devices.get(dev)
            result = verify_message(dev, message, record, self.policy.max_message)
            if isinstance(result, Refusal):
                answered.append((dev, message))
                events.append((result.kind, dev, result.height, result.why, now))
                acks.append((dev, Ack(0 if record is None else record.next_height, "rejected",
                                      result.why)))
                continue
            held = None
            if record is not None and result.height < record.next_height:
                held = self.store.block(dev, result.height)
            if held is not None and held[0] == result.hash:
                answered.append((dev, message))
                events.append(("dup", dev, result.height, f"dup: block {dev}/{result.height} "
                                                          f"is already at log index {held[1]}",
                               now))
                acks.append((dev, Ack(result.height + 1, "dup", log_index=held[1])))
                continue
            verified.append(result)
        queue.enqueue(self.store, self.name, now, verified, events, requests)
        self.queued += len(verified)
        self.answered += len(acks)
        if self.metrics is not None:
            self.metrics.count_acks(answered, [ack for _, ack in acks])
        return [Publish(DeviceTopics(dev, self.prefix).ack, ack.encode(), QOS_SYNC)
                for dev, ack in acks]

    def _refresh_checkpoint(self) -> None:
        """Take the latest checkpoint the sequencer stored (for `cons` bounds and acks)."""
        note = self.store.last_checkpoint()
        if note is not None and note != self.log.checkpoint_note:
            self.log.checkpoint = Checkpoint.parse(note[:note.rfind("\n\n") + 1])
            self.log.checkpoint_note = note
