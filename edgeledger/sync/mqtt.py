"""An MQTT transport that only carries bytes (paho-mqtt 2.x, MQTT 3.1.1 or 5).

Theory of operation. The sync protocol (hello, blk, ack, state; edgeledger/sync/
device.py) is sans-I/O: it consumes received payloads and produces payloads to
publish. This module moves those bytes and knows nothing of topics' meaning. It runs
paho's network loop on one background thread and hands everything that happens to
the caller as events, in order, through a thread-safe queue (`MqttTransport.get`) or
an `on_event` callback called on the network thread (for example
`loop.call_soon_threadsafe`):

- `Connected(session_present)`: a CONNACK accepted the connection and, when the
  broker had lost our session, our subscriptions are back in place (their SUBACK
  came). The protocol sends its hello here, on every connect.
- `ConnectionLost(reason)`: the connection dropped; the transport reconnects by
  itself with exponential backoff (`reconnect_min` doubling up to `reconnect_max`).
- `Received(topic, payload, qos, retain)`: a message.

Delivery, honestly stated:
- `publish()` returns when the broker's PUBACK arrives (QoS 1). A PUBACK means the
  broker took the message; it is not durability at the aggregator and not an ack from
  it. Only the protocol's `ack` (sent after the aggregator's append is durable) is.
- QoS 1 messages not yet PUBACKed stay queued in this process across disconnects
  and are sent again (with DUP set) after each reconnect, until their PUBACK comes.
  So a message can arrive twice (at least once), and a message in flight when the
  broker died reaches the broker again after its restart; whether a subscriber then
  gets it depends on the subscriber's session having survived (broker persistence
  and `clean_start=False`) and on its subscription being back in place. Nothing is
  kept if this process dies: the protocol resumes from hello/ack, never from MQTT.
- A received QoS 1 message is PUBACKed to the broker once it is in the queue (or
  `on_event` returned), not when the caller has handled it.
- Retained messages can be delivered again after a reconnect that had to subscribe
  anew (a session the broker no longer had).

Every failure is a `TransportError` naming the broker (`host:port`) and the reason.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgeledger.core.errors import TransportError

MqttVersion = Literal["3.1.1", "5"]
_ABSENT = object()
_PROTOCOLS = {"3.1.1": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}


@dataclass(frozen=True)
class Will:
    """The last will: published by the broker when this client vanishes uncleanly."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Tls:
    """TLS settings: the CA that signed the broker's certificate, and our own if any."""

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class Connected:
    """The broker accepted a connection (the first one or a reconnect)."""

    session_present: bool


@dataclass(frozen=True)
class ConnectionLost:
    """The connection dropped; the transport is reconnecting."""

    reason: str


@dataclass(frozen=True)
class Received:
    """A message the broker delivered."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


Event = Connected | ConnectionLost | Received


def _failed(reason: ReasonCode | MQTTErrorCode | int) -> bool:
    if isinstance(reason, ReasonCode):
        return bool(reason.is_failure)
    return int(reason) != 0


class MqttTransport:
    """One MQTT connection that reconnects by itself; see the module docstring.

    `protocol` is "3.1.1" or "5". `clean_start=False` (the default) keeps the
    broker-side session across reconnects, so QoS 1 messages for us are queued by the
    broker while we are away (MQTT 5: for `session_expiry` seconds). `keepalive` is
    also how long a silent connection (a frozen broker, a cut link) takes to be
    noticed, about twice that in the worst case. `max_queued` caps the QoS 1 messages
    kept unacknowledged in this process (0: no cap); past it `publish` raises.
    Reconnect delays double from `reconnect_min` to `reconnect_max` seconds. A
    transport is used once: after `close()` or a failed `connect()`, make a new one.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        will: Will | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: Tls | None = None,
        protocol: MqttVersion = "3.1.1",
        keepalive: int = 30,
        clean_start: bool = False,
        session_expiry: int = 7 * 24 * 3600,
        reconnect_min: int = 1,
        reconnect_max: int = 30,
        max_queued: int = 0,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if protocol not in _PROTOCOLS:
            raise TransportError(f"{host}:{port}: MQTT protocol {protocol!r} is not 3.1.1 or 5")
        self.address = f"{host}:{port}"
        self._host, self._port, self._keepalive = host, port, keepalive
        self._v5 = protocol == "5"
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._on_event = on_event
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending: dict[int, Future[None]] = {}  # publish and subscribe mids
        self._early: dict[int, str | None] = {}  # outcomes that beat their registration
        self._untracked: set[int] = set()  # publish_nowait mids awaiting their PUBACK
        # SUBACKs of our own re-subscriptions after a reconnect, and the Connected
        # event each one releases.
        self._resubscribes: dict[int, Connected] = {}
        self._filters: dict[str, int] = {}
        self._connected = threading.Event()
        self._first: Future[Connected] = Future()
        self._closing = False
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if self._v5 else clean_start,
            protocol=_PROTOCOLS[protocol],
        )
        self._client.reconnect_delay_set(reconnect_min, reconnect_max)
        self._client.max_queued_messages_set(max_queued)
        if username is not None:
            self._client.username_pw_set(username, password)
        if will is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)
        if tls is not None:
            self._client.tls_set(
                tls.ca_file, tls.cert_file, tls.key_file, cert_reqs=ssl.CERT_REQUIRED
            )
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_publish = self._handle_publish
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_socket_open = _no_delay

    # -- caller side -------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and wait for the broker's CONNACK; from then on reconnect by itself.

        Raises TransportError if the broker cannot be reached or refuses us (bad
        user name or password, not authorised) within `timeout` seconds.
        """
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._session_expiry
        try:
            self._client.connect(
                self._host,
                self._port,
                self._keepalive,
                clean_start=self._clean_start if self._v5 else 3,
                properties=properties,
            )
        except (OSError, ValueError) as err:
            raise TransportError(f"{self.address}: cannot connect: {err}") from err
        self._client.loop_start()
        try:
            self._first.result(timeout)
        except FutureTimeout:
            self._shutdown()
            raise TransportError(f"{self.address}: no CONNACK within {timeout} s") from None
        except TransportError:
            self._shutdown()
            raise

    def subscribe(self, filters: Sequence[str], qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe to topic filters and wait for the SUBACK.

        The filters are remembered and subscribed again after any reconnect where the
        broker no longer had our session. Raises TransportError if the broker refuses
        one (for example by ACL, on brokers that say so) or does not answer in time.
        """
        with self._lock:
            for topic in filters:
                self._filters[topic] = qos
        if not self._connected.wait(timeout):
            raise TransportError(
                f"{self.address}: not connected; cannot subscribe to {list(filters)}"
            )
        rc, mid = self._client.subscribe([(topic, qos) for topic in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise TransportError(
                f"{self.address}: subscribe {list(filters)}: {paho.error_string(rc)}"
            )
        self._wait(self._register(mid), timeout, f"subscribe {list(filters)}")

    def publish_async(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> Future[None]:
        """Queue a message; the future completes on PUBACK (QoS 0: once written).

        The message is kept and re-sent across reconnects until acknowledged. The
        future fails with TransportError if the broker refuses it (MQTT 5 reason
        code, e.g. not authorised) or the transport is closed first.
        """
        info = self._queue(topic, payload, qos, retain)
        if qos == 0 and info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"{self.address}: publish to {topic!r}: not connected (QoS 0)")
        return self._register(info.mid)

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None:
        """Queue a message like `publish_async`, without a future for its PUBACK.

        For a busy publisher that never waits (the aggregator's acks): the message is
        still kept and re-sent across reconnects; only nobody is told when it lands.
        """
        info = self._queue(topic, payload, qos, retain)
        if qos == 0:
            return
        with self._lock:  # the PUBACK may have come already (see _outcome)
            if self._early.pop(info.mid, _ABSENT) is _ABSENT:
                self._untracked.add(info.mid)

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 30.0
    ) -> None:
        """Publish and return once the broker's PUBACK arrives (not durability; see above).

        On timeout the message stays queued and will still be sent; the caller learns
        only that no PUBACK came in time.
        """
        self._wait(
            self.publish_async(topic, payload, qos, retain), timeout, f"publish to {topic!r}"
        )

    def set_will(self, will: Will) -> None:
        """Register a new last will for the next (re)connect.

        MQTT fixes the will at CONNECT: the connection already up keeps the old one,
        so the broker publishes the will of the latest connect.
        """
        self._client.will_set(will.topic, will.payload, will.qos, will.retain)

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event (without `on_event`), or None if none came within `timeout`."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def connected(self) -> bool:
        """True while a connection is up (the broker accepted our CONNECT)."""
        return self._connected.is_set()

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (no last will) and stop the network thread.

        Publishes still waiting for a PUBACK fail with TransportError.
        """
        self._closing = True
        self._shutdown()
        with self._lock:
            pending, self._pending = self._pending, {}
            self._untracked.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(
                    TransportError(f"{self.address}: closed before the broker answered")
                )

    # -- helpers -----------------------------------------------------------------

    def _queue(self, topic: str, payload: bytes, qos: int, retain: bool) -> paho.MQTTMessageInfo:
        """Hand a message to paho; TransportError after close() or with a full queue."""
        if self._closing:
            raise TransportError(f"{self.address}: publish to {topic!r} after close()")
        try:
            info = self._client.publish(topic, payload, qos, retain)
        except ValueError as err:
            raise TransportError(f"{self.address}: publish to {topic!r}: {err}") from err
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise TransportError(f"{self.address}: publish to {topic!r}: outgoing queue is full")
        return info

    def _shutdown(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def _register(self, mid: int) -> Future[None]:
        future: Future[None] = Future()
        with self._lock:
            if mid in self._early:
                self._settle(future, self._early.pop(mid))
            else:
                self._pending[mid] = future
        return future

    def _outcome(self, mid: int, failure: str | None) -> None:
        with self._lock:
            future = self._pending.pop(mid, None)
            if future is None:
                if mid in self._untracked:
                    self._untracked.discard(mid)
                else:
                    self._early[mid] = failure
                return
        self._settle(future, failure)

    def _settle(self, future: Future[None], failure: str | None) -> None:
        if future.done():
            return
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(TransportError(f"{self.address}: {failure}"))

    def _wait(self, future: Future[None], timeout: float, what: str) -> None:
        try:
            future.result(timeout)
        except FutureTimeout:
            raise TransportError(f"{self.address}: {what}: no answer within {timeout} s") from None

    def _emit(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)
        else:
            self._events.put(event)

    # -- paho callbacks (network thread) -----------------------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            error = TransportError(f"{self.address}: connection refused: {reason}")
            if not self._first.done():
                client.disconnect()  # no retry loop: connect() reports the refusal
                self._first.set_exception(error)
            else:
                self._emit(ConnectionLost(f"connection refused: {reason}"))
            return
        self._connected.set()
        with self._lock:
            filters = list(self._filters.items())
        event = Connected(flags.session_present)
        if not self._first.done():
            self._first.set_result(event)
        if filters and not flags.session_present:
            # The broker lost our session: subscribe again, and report Connected only
            # once the SUBACK says the subscriptions are back in place.
            _, mid = client.subscribe(filters)
            if mid is not None:
                with self._lock:
                    self._resubscribes[mid] = event
                return
        self._emit(event)

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        if was_up and not self._closing:
            self._emit(ConnectionLost(str(reason)))

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        self._emit(
            Received(message.topic, bytes(message.payload), message.qos, bool(message.retain))
        )

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        self._outcome(mid, f"publish refused: {reason}" if _failed(reason) else None)

    def _handle_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties,
    ) -> None:
        with self._lock:
            connected = self._resubscribes.pop(mid, None)
        if connected is not None:
            self._emit(connected)
            return
        refused = [str(r) for r in reasons if _failed(r)]
        self._outcome(mid, f"subscription refused: {', '.join(refused)}" if refused else None)


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """TCP_NODELAY on every connection: MQTT packets are small and each waits for an
    answer, so Nagle's algorithm plus delayed ACKs would add ~40 ms to many of them."""
    if isinstance(sock, socket.socket):  # also ssl.SSLSocket; not a websocket wrapper
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(
    host: str, port: int, client_id: str, timeout: float = 10.0, **options: Any
) -> MqttTransport:
    """Make an MqttTransport (options as its constructor) and connect it."""
    transport = MqttTransport(host, port, client_id, **options)
    transport.connect(timeout)
    return transport
