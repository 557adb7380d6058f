"""The MQTT transport against a real Mosquitto (tests/mosquitto.py): nothing mocked.

Each test starts its own broker on a free loopback port, so it can restart, kill or
pause it. Faults are real: SIGKILL of a client process, SIGSTOP of a client or the
broker, a broker stopped and started on the same port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mosquitto import Mosquitto, make_tls_files

from edgeledger.core.errors import TransportError
from edgeledger.sync.mqtt import (
    Connected,
    ConnectionLost,
    Event,
    MqttTransport,
    Received,
    Tls,
    Will,
    connect,
)

REPO = Path(__file__).resolve().parents[2]
ACL = (REPO / "docs" / "mosquitto" / "edgeledger.acl").read_text()
P = "edgeledger/v1"
Factory = Callable[..., Mosquitto]


@pytest.fixture
def clients() -> Iterator[Callable[..., MqttTransport]]:
    """connect() with fast reconnects; every transport is closed after the test."""
    made: list[MqttTransport] = []

    def make(broker: Mosquitto, client_id: str, **options: object) -> MqttTransport:
        options.setdefault("reconnect_max", 2)
        transport = connect(broker.host, broker.port, client_id, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


def collect(
    transport: MqttTransport, until: Callable[[list[Event]], bool], timeout: float = 10.0
) -> list[Event]:
    """Events from `transport` until `until(events)` holds; fails after `timeout`."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while not until(events):
        left = deadline - time.monotonic()
        event = transport.get(timeout=max(left, 0)) if left > 0 else None
        if event is None:
            pytest.fail(f"timed out after {timeout} s; events so far: {events}")
        events.append(event)
    return events


def payloads(events: list[Event]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Received)]


def count(n: int) -> Callable[[list[Event]], bool]:
    return lambda events: len(payloads(events)) >= n


def drain(transport: MqttTransport) -> None:
    while transport.get(timeout=0) is not None:
        pass


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_round_trip_qos1(
    mosquitto: Mosquitto, clients: Callable[..., MqttTransport], protocol: str
) -> None:
    sub = clients(mosquitto, "agg", protocol=protocol)
    assert isinstance(sub.get(timeout=1), Connected)
    sub.subscribe([f"{P}/dev/+/blk"])
    pub = clients(mosquitto, "gw-1", protocol=protocol)
    sent = [f"block {i}".encode() + bytes([0, 255, i]) for i in range(20)]
    for payload in sent:
        pub.publish(f"{P}/dev/gw-1/blk", payload)  # returns on PUBACK
    events = collect(sub, count(len(sent)))
    assert payloads(events) == sent
    got = [e for e in events if isinstance(e, Received)]
    assert {(e.topic, e.qos, e.retain) for e in got} == {(f"{P}/dev/gw-1/blk", 1, False)}


def test_retained_message_reaches_a_late_subscriber(
    mosquitto: Mosquitto, clients: Callable[..., MqttTransport]
) -> None:
    pub = clients(mosquitto, "agg")
    pub.publish(f"{P}/checkpoint", b"checkpoint 1", retain=True)
    pub.publish(f"{P}/checkpoint", b"checkpoint 2", retain=True)
    late = clients(mosquitto, "gw-late")
    late.subscribe([f"{P}/checkpoint"])
    (message,) = [e for e in collect(late, count(1)) if isinstance(e, Received)]
    assert (message.payload, message.retain) == (b"checkpoint 2", True)


def test_events_through_a_callback_and_qos0(mosquitto: Mosquitto) -> None:
    """on_event runs on the network thread; a QoS 0 publish completes once written."""
    seen: list[Event] = []
    sub = connect(mosquitto.host, mosquitto.port, "agg", on_event=seen.append)
    pub = connect(mosquitto.host, mosquitto.port, "gw-1", protocol="5")
    try:
        sub.subscribe([f"{P}/dev/+/state"])
        pub.publish(f"{P}/dev/gw-1/state", b"online", qos=0, retain=True)
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [
            Connected(session_present=False),
            Received(f"{P}/dev/gw-1/state", b"online", 0, False),
        ]
        assert sub.get(timeout=0) is None  # nothing went to the queue
    finally:
        sub.close()
        pub.close()


CHILD = """
import sys, time
from edgeledger.sync.mqtt import Will, connect
port, keepalive = int(sys.argv[1]), int(sys.argv[2])
connect("127.0.0.1", port, "gw-doomed", keepalive=keepalive,
        will=Will("edgeledger/v1/dev/gw-doomed/state", b"offline", qos=1, retain=True))
print("connected", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("cut", ["SIGKILL", "SIGSTOP"])
def test_last_will_when_the_client_dies_or_goes_silent(
    mosquitto: Mosquitto, clients: Callable[..., MqttTransport], cut: str
) -> None:
    """SIGKILL: the kernel closes the socket. SIGSTOP: the broker's keepalive expires
    (1.5 x the client's 1 s keepalive). Either way the broker publishes the will."""
    watcher = clients(mosquitto, "watcher")
    watcher.subscribe([f"{P}/dev/+/state"])
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(mosquitto.port), "1"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"connected\n"
        child.send_signal(getattr(signal, cut))
        (will,) = [e for e in collect(watcher, count(1), timeout=10) if isinstance(e, Received)]
        assert (will.topic, will.payload) == (f"{P}/dev/gw-doomed/state", b"offline")
    finally:
        child.kill()
        child.wait()
    late = clients(mosquitto, "late")  # the will was retained
    late.subscribe([f"{P}/dev/+/state"])
    assert payloads(collect(late, count(1))) == [b"offline"]


CHILD_RENEWS = """
import sys, time
from edgeledger.sync.mqtt import Connected, Will, connect
port = int(sys.argv[1])
t = connect("127.0.0.1", port, "gw-renew", reconnect_min=1, reconnect_max=1,
            will=Will("edgeledger/v1/dev/gw-renew/state", b"tip 1", qos=1, retain=True))
t.set_will(Will("edgeledger/v1/dev/gw-renew/state", b"tip 2", qos=1, retain=True))
assert isinstance(t.get(5), Connected)  # the first connect's event
print("renewed", flush=True)
while not isinstance(t.get(60), Connected):
    pass
print("reconnected", flush=True)
time.sleep(60)
"""


def test_a_renewed_will_takes_effect_at_the_next_connect(
    mosquitto: Mosquitto, clients: Callable[..., MqttTransport]
) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD_RENEWS, str(mosquitto.port)],
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"renewed\n"
        mosquitto.restart()  # the child reconnects, registering the renewed will
        assert child.stdout.readline() == b"reconnected\n"
        watcher = clients(mosquitto, "watcher")
        watcher.subscribe([f"{P}/dev/+/state"])
        child.kill()
        (will,) = [e for e in collect(watcher, count(1), timeout=10) if isinstance(e, Received)]
        assert will.payload == b"tip 2"
    finally:
        child.kill()
        child.wait()


def test_clean_close_sends_no_will(
    mosquitto: Mosquitto, clients: Callable[..., MqttTransport]
) -> None:
    watcher = clients(mosquitto, "watcher")
    watcher.subscribe([f"{P}/dev/+/state"])
    device = clients(mosquitto, "gw-1", will=Will(f"{P}/dev/gw-1/state", b"offline"))
    device.close()
    watcher.publish(f"{P}/dev/marker/state", b"marker")  # anything before it was delivered first
    assert payloads(collect(watcher, count(1))) == [b"marker"]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_broker_restart_mid_stream(
    mosquitto: Mosquitto, clients: Callable[..., MqttTransport], how: str
) -> None:
    """Persistence off: the restarted broker has no sessions. Both clients reconnect by
    themselves and the subscriber subscribes again; messages published after that
    arrive. A message queued while the broker was down is sent after the reconnect
    and PUBACKed, but may reach the broker before the subscriber is back: with no
    session it is then delivered to nobody (the protocol's hello/ack recovers)."""
    sub = clients(mosquitto, "agg")
    sub.subscribe([f"{P}/dev/+/blk"])
    pub = clients(mosquitto, "gw-1")
    for i in range(5):
        pub.publish(f"{P}/dev/gw-1/blk", b"before %d" % i)
    assert payloads(collect(sub, count(5))) == [b"before %d" % i for i in range(5)]
    drain(pub)

    if how == "SIGKILL":
        mosquitto.kill()
    else:
        mosquitto.stop()
    lost = collect(pub, lambda ev: any(isinstance(e, ConnectionLost) for e in ev))
    assert lost
    queued = pub.publish_async(f"{P}/dev/gw-1/blk", b"while down")
    assert not queued.done()
    mosquitto.start()

    collect(pub, lambda ev: any(isinstance(e, Connected) for e in ev))
    events = collect(sub, lambda ev: any(isinstance(e, Connected) for e in ev))
    assert [e for e in events if isinstance(e, Connected)] == [Connected(session_present=False)]
    queued.result(timeout=10)  # PUBACKed by the new broker
    # Connected came after the re-subscription's SUBACK: the subscription is in place.
    for i in range(5):
        pub.publish(f"{P}/dev/gw-1/blk", b"after %d" % i)
    got = payloads(collect(sub, lambda ev: b"after 4" in payloads(ev)))
    assert [p for p in got if p.startswith(b"after")] == [b"after %d" % i for i in range(5)]
    assert set(got) <= {b"while down"} | {b"after %d" % i for i in range(5)}


def test_broker_restart_with_persistence_keeps_queued_messages(
    mosquitto_factory: Factory, clients: Callable[..., MqttTransport]
) -> None:
    """Persistence on and persistent sessions: what the publisher queued while the broker
    was down reaches the subscriber, even if the subscriber reconnects later."""
    broker = mosquitto_factory(persistence=True)
    sub = clients(broker, "agg")
    sub.subscribe([f"{P}/dev/+/blk"])
    pub = clients(broker, "gw-1")
    broker.stop()  # SIGTERM: the broker saves sessions and subscriptions
    futures = [pub.publish_async(f"{P}/dev/gw-1/blk", b"queued %d" % i) for i in range(10)]
    broker.start()
    for future in futures:
        future.result(timeout=10)
    events = collect(sub, count(10))
    assert Connected(session_present=True) in events
    assert sorted(set(payloads(events))) == sorted(b"queued %d" % i for i in range(10))


def test_paused_broker_then_resumed(
    mosquitto: Mosquitto, clients: Callable[..., MqttTransport]
) -> None:
    """The broker freezes for 3 s while the client keeps publishing. The client's 1 s
    keepalive gives up on the silent connection (after a PINGREQ goes unanswered) and
    retries; after the resume every message is PUBACKed and delivered (at least once:
    resent ones may repeat)."""
    sub = clients(mosquitto, "agg")
    sub.subscribe([f"{P}/dev/+/blk"])
    pub = clients(mosquitto, "gw-1", keepalive=1)
    drain(pub)
    mosquitto.pause()
    futures = []
    for i in range(30):
        futures.append(pub.publish_async(f"{P}/dev/gw-1/blk", b"m %d" % i))
        time.sleep(0.1)
    assert not any(f.done() for f in futures)
    mosquitto.resume()
    for future in futures:
        future.result(timeout=15)
    got = payloads(
        collect(sub, lambda ev: set(payloads(ev)) >= {b"m %d" % i for i in range(30)}, timeout=15)
    )
    assert set(got) == {b"m %d" % i for i in range(30)}
    seen = collect(pub, lambda ev: any(isinstance(e, Connected) for e in ev))
    assert any(isinstance(e, ConnectionLost) for e in seen)


def test_wrong_password_is_refused(mosquitto_factory: Factory) -> None:
    broker = mosquitto_factory(users={"gw-1": "right horse"})
    for options in ({"username": "gw-1", "password": "wrong"}, {}):
        with pytest.raises(TransportError) as caught:
            connect(broker.host, broker.port, "gw-1", timeout=5, **options)
        assert broker.address in str(caught.value)
        assert "refused" in str(caught.value)
    ok = connect(broker.host, broker.port, "gw-1", username="gw-1", password="right horse")
    ok.close()


def test_unreachable_broker_names_the_address() -> None:
    from mosquitto import free_port

    port = free_port()
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}: cannot connect"):
        connect("127.0.0.1", port, "gw-1", timeout=2)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_acl_confines_a_device_to_its_own_id(
    mosquitto_factory: Factory, clients: Callable[..., MqttTransport], protocol: str
) -> None:
    users = {"aggregator": "agg-pw", "gw-1": "pw-1", "gw-2": "pw-2"}
    broker = mosquitto_factory(users=users, acl=ACL)

    def login(name: str) -> MqttTransport:
        return clients(broker, name, username=name, password=users[name], protocol=protocol)

    agg = login("aggregator")
    agg.subscribe([f"{P}/dev/+/blk"])
    gw2 = login("gw-2")
    forged = f"{P}/dev/gw-1/blk"
    if protocol == "5":
        with pytest.raises(TransportError, match="Not authorized"):
            gw2.publish(forged, b"forged")
    else:
        gw2.publish(forged, b"forged")  # 3.1.1 cannot refuse: PUBACK, then dropped
    gw2.publish(f"{P}/dev/gw-2/blk", b"own")
    events = collect(agg, count(1))
    time.sleep(0.3)
    events += [e for e in iter(lambda: agg.get(timeout=0), None)]
    assert [(e.topic, e.payload) for e in events if isinstance(e, Received)] == [
        (f"{P}/dev/gw-2/blk", b"own")
    ]


def test_tls_with_a_private_ca(
    mosquitto_factory: Factory, clients: Callable[..., MqttTransport], tmp_path: Path
) -> None:
    files = make_tls_files(tmp_path / "pki")
    broker = mosquitto_factory(tls=files)
    tls = Tls(ca_file=str(files.ca_file))
    sub = clients(broker, "agg", tls=tls)
    sub.subscribe([f"{P}/checkpoint"])
    clients(broker, "gw-1", tls=tls).publish(f"{P}/checkpoint", b"over tls")
    assert payloads(collect(sub, count(1))) == [b"over tls"]
    other_ca = make_tls_files(tmp_path / "other")
    with pytest.raises(TransportError, match=broker.address):
        connect(broker.host, broker.port, "gw-2", timeout=5, tls=Tls(ca_file=str(other_ca.ca_file)))


def test_publish_nowait_delivers_and_keeps_no_bookkeeping(
    mosquitto: Mosquitto, clients: Callable[..., MqttTransport]
) -> None:
    """The aggregator's acks: many QoS 1 publishes without futures. (Fewer than the
    broker's default queue of 1,000 per subscriber: past it Mosquitto drops QoS 1
    messages for a slow subscriber, which the sync protocol's resends cover.)"""
    watcher = clients(mosquitto, "watcher")
    watcher.subscribe([f"{P}/dev/+/ack"])
    sender = clients(mosquitto, "sender")
    for i in range(600):
        sender.publish_nowait(f"{P}/dev/gw-{i % 7}/ack", b"%d" % i)
    got = collect(watcher, count(600), timeout=30)
    assert sorted(int(p) for p in payloads(got)) == list(range(600))
    deadline = time.monotonic() + 5
    while (sender._untracked or sender._early) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sender._untracked and not sender._early  # every PUBACK matched, none kept
