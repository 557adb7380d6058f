"""The `edgeledger` command (DESIGN.md section 8)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgeledger import __version__
from edgeledger.core import b64
from edgeledger.core.bundle import ProofBundle, verify_bundle
from edgeledger.core.errors import ConfigError, DecodeError, EdgeLedgerError, VerificationError
from edgeledger.core.note import Signer, valid_name
from edgeledger.keyfile import load_signer, load_verifier, write_signer

if TYPE_CHECKING:
    from edgeledger.aggregator.enrollment import Action, DeviceState, Rotation
    from edgeledger.aggregator.store.postgres import PostgresStore
    from edgeledger.aggregator.store.sqlite import SqliteStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except EdgeLedgerError as exc:
        print(f"edgeledger {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeledger",
        description="Signed, hash-chained sensor readings from IoT gateways, "
                    "provable in an RFC 6962 log.")
    parser.add_argument("--version", action="version", version=f"edgeledger {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = sub.add_parser("keygen", help="make a new Ed25519 key (file mode 0600)")
    keygen.add_argument("--out", required=True, type=Path, help="key file to create")
    keygen.add_argument("--name", help="key name: the device id or the log origin "
                                       "(default: the file name without extension)")
    keygen.set_defaults(run=_keygen)

    verify = sub.add_parser("verify", help="check a proof bundle offline",
                            description="Check a proof bundle (DESIGN.md 2.4). Exit 0 and one "
                                        "line saying what was proven, or 1 and the first check "
                                        "that failed.")
    verify.add_argument("bundle", help="proof bundle JSON file, or - for standard input")
    verify.add_argument("--log-key", required=True, metavar="VKEY",
                        help="the log's verifier key, or a file holding it")
    verify.set_defaults(run=_verify)

    audit = sub.add_parser(
        "audit", help="check a log's checkpoint chain and devices' blocks over its HTTP API",
        description="Verify every checkpoint since the last run (signature, height, prev, "
                    "consistency) and, with --device/--all-devices, every block of those "
                    "devices. Exit 0 and one summary line; 1 and the first fault; 2 on a "
                    "usage error; 3 if the API cannot be reached. See docs/audit.md.")
    audit.add_argument("--api", required=True, metavar="URL",
                       help="the aggregator's HTTP API, e.g. http://127.0.0.1:8080")
    audit.add_argument("--log-key", required=True, metavar="VKEY",
                       help="the log's verifier key, or a file holding it")
    audit.add_argument("--state", type=Path, metavar="FILE",
                       help="last verified checkpoint (default: "
                            "~/.local/state/edgeledger/audit-<origin>.json)")
    audit.add_argument("--device", action="append", default=[], metavar="ID",
                       help="re-verify every block of this device (repeatable)")
    audit.add_argument("--all-devices", action="store_true",
                       help="re-verify every block of every device the API lists")
    audit.add_argument("--timeout", type=float, default=30.0, metavar="S",
                       help="seconds to wait for each answer (default 30)")
    audit.set_defaults(run=_audit)

    agent = sub.add_parser("agent", help="the gateway agent, in the foreground (systemd's "
                                         "ExecStart)")
    agent.add_argument("--config", required=True, type=Path, help="agent TOML file")
    agent.add_argument("--data-dir", type=Path, help="overrides [device] data_dir")
    agent.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    agent.set_defaults(run=_agent)

    aggregator = sub.add_parser(
        "aggregator", help="the aggregator: ingest, sequencer, checkpoints (foreground)",
        description="Verify gateways' blocks from MQTT, append them to the canonical log in "
                    "the store, publish signed checkpoints. SIGTERM drains and exits 0; a "
                    "bad configuration exits 78.")
    aggregator.add_argument("--config", required=True, type=Path, help="aggregator TOML file")
    aggregator.add_argument("--log-level", default="info",
                            choices=["debug", "info", "warning", "error"])
    aggregator.set_defaults(run=_aggregator)

    check = sub.add_parser("check-config", help="validate agent and aggregator TOML files")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.set_defaults(run=_check_config)

    _enrollment_parsers(sub)

    log = sub.add_parser("log", help="the gateway's local log")
    log_sub = log.add_subparsers(dest="log_command", required=True, metavar="COMMAND")
    log_verify = log_sub.add_parser(
        "verify", help="check records, chain, Merkle roots and signatures; show state",
        description="Check a gateway's local log without changing it. Exit 0 and one "
                    "summary line, or 1 and the first fault.")
    log_verify.add_argument("--data-dir", required=True, type=Path)
    log_verify.set_defaults(run=_log_verify)

    demo = sub.add_parser("demo", help="the end-to-end demo: gateways, aggregator, log, proofs")
    demo.add_argument("--gateways", type=_positive, default=3, metavar="N",
                      help="simulated gateways (default 3)")
    demo.add_argument("--seconds", type=float, default=60, metavar="S",
                      help="how long to run (default 60; 0 = until Ctrl-C)")
    demo.add_argument("--dir", type=Path, default=Path("demo-out"),
                      help="where to write log.vkey and proofs/ (default ./demo-out)")
    demo.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                      help="HTTP API address (used by the networked demo)")
    demo.add_argument("--broker", metavar="HOST:PORT",
                      help="use this MQTT broker instead of starting one (networked demo)")
    demo.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    demo.set_defaults(run=_demo)
    return parser


def _enrollment_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """enroll, revoke, devices (aggregator side) and rotate-key (gateway side)."""
    key_help = ("base64 of the 32-byte Ed25519 public key, a note verifier key, or a key "
                "file (of a signer key file only the public half is read)")
    enroll = sub.add_parser(
        "enroll", help="let a device's key into the aggregator's log (or apply a rotation)",
        description="Enroll DEVICE_ID with PUBKEY in the aggregator's store; enrolling the "
                    "same key again changes nothing. A different key for an enrolled id is "
                    "refused unless --rotation gives a record signed by the enrolled key.")
    enroll.add_argument("--config", required=True, type=Path, help="aggregator TOML file")
    enroll.add_argument("device_id", nargs="?", metavar="DEVICE_ID")
    enroll.add_argument("pubkey", nargs="?", metavar="PUBKEY", help=key_help)
    enroll.add_argument("--rotation", type=Path, metavar="FILE",
                        help="apply this key rotation record (from edgeledger rotate-key)")
    enroll.set_defaults(run=_enroll)

    revoke = sub.add_parser("revoke", help="stop accepting a device's blocks (history stays)")
    revoke.add_argument("--config", required=True, type=Path, help="aggregator TOML file")
    revoke.add_argument("device_id", metavar="DEVICE_ID")
    revoke.add_argument("--reason", default="revoked by the operator", metavar="TEXT",
                        help="recorded in the event journal")
    revoke.set_defaults(run=_revoke)

    devices = sub.add_parser("devices", help="list enrolled and revoked devices")
    devices.add_argument("--config", required=True, type=Path, help="aggregator TOML file")
    devices.set_defaults(run=_devices)

    rotate = sub.add_parser(
        "rotate-key", help="make a key rotation record, signed by the old key (gateway side)",
        description="Write a rotation record handing DEVICE's identity from the key in "
                    "--old-key to --new-key; apply it with `edgeledger enroll --rotation "
                    "FILE`, or publish it on <prefix>/dev/<id>/rotate.")
    rotate.add_argument("--old-key", required=True, type=Path, metavar="FILE",
                        help="the enrolled (old) signer key file, mode 0600")
    rotate.add_argument("--new-key", required=True, metavar="PUBKEY", help=key_help)
    rotate.add_argument("--out", required=True, type=Path, help="record file to create")
    rotate.add_argument("--device", metavar="DEVICE_ID",
                        help="device id (default: the old key's name)")
    rotate.set_defaults(run=_rotate_key)


def _keygen(args: argparse.Namespace) -> int:
    name = args.name or args.out.stem
    if not valid_name(name):
        raise ConfigError(str(args.out), "--name", f"{name!r} is not a valid key name "
                                                   "(no spaces or '+'); pass --name")
    signer = Signer.generate(name)
    write_signer(args.out, signer)
    print(f"wrote {args.out} (mode 0600)")
    print(f"public key:   {b64.encode(signer.public_key)}")
    print(f"verifier key: {signer.verifier().text()}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    try:
        log_key = load_verifier(args.log_key)
    except (DecodeError, ConfigError) as exc:
        print(f"FAILED log key: {exc}")
        return EXIT_FAILED
    try:
        text = sys.stdin.read() if args.bundle == "-" else Path(args.bundle).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"FAILED bundle: cannot read {args.bundle}: {exc}")
        return EXIT_FAILED
    try:
        proven = verify_bundle(ProofBundle.from_json(text), log_key)
    except DecodeError as exc:
        print(f"FAILED bundle format: {exc}")
        return EXIT_FAILED
    except VerificationError as exc:
        print(f"FAILED {exc.check}: {exc.detail}")
        return EXIT_FAILED
    print(f"OK: {proven.describe()}")
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    from edgeledger.audit import AuditOptions, run_audit

    return run_audit(AuditOptions(api=args.api, log_key=args.log_key, state=args.state,
                                  devices=tuple(args.device), all_devices=args.all_devices,
                                  timeout=args.timeout))


def _read_key(spec: str, what: str) -> tuple[bytes, str | None]:
    """A public key given on the command line: the key text itself, or a file holding it."""
    from edgeledger.aggregator.enrollment import parse_public_key

    path = Path(spec)
    if path.is_file():
        try:
            return parse_public_key(path.read_text(), f"{what} {spec}")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(spec, None, f"cannot read key file: {exc}") from exc
    return parse_public_key(spec, what)


def _device_state(store: SqliteStore | PostgresStore, dev: str) -> DeviceState | None:
    from edgeledger.aggregator.enrollment import DeviceState

    device = store.device(dev)
    return None if device is None else DeviceState(device.public_key, device.enrolled_ms,
                                                   device.revoked_ms)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _enroll(args: argparse.Namespace) -> int:
    from edgeledger.aggregator.config import load_aggregator_config, open_any_store
    from edgeledger.aggregator.enrollment import Action, decide_enroll, kid

    if args.rotation is not None:
        return _apply_rotation(args)
    if args.device_id is None or args.pubkey is None:
        print("edgeledger enroll: DEVICE_ID and PUBKEY are required (or --rotation FILE)",
              file=sys.stderr)
        return EXIT_USAGE
    dev = args.device_id
    key, name = _read_key(args.pubkey, "PUBKEY")
    if name is not None and name != dev:
        raise ConfigError(args.pubkey, None, f"the key is named {name!r}, not {dev!r}; a "
                                             "device key is named after its device id")
    store = open_any_store(load_aggregator_config(args.config))
    try:
        with store.transaction():
            action = decide_enroll(dev, key, _device_state(store, dev))
            if action is Action.ENROLL:
                now = _now_ms()
                store.enroll(dev, key, now)
                store.add_event("enrolled", dev, None, f"key {kid(key)} enrolled", now)
    finally:
        store.close()
    what = "enrolled" if action is Action.ENROLL else "already enrolled, unchanged:"
    print(f"{what} {dev} key {kid(key)} ({b64.encode(key)}) in {store.path}")
    return EXIT_OK


def _apply_rotation(args: argparse.Namespace) -> int:
    from edgeledger.aggregator.config import load_aggregator_config, open_any_store
    from edgeledger.aggregator.enrollment import Action, parse_rotation

    try:
        rotation = parse_rotation(args.rotation.read_bytes())
    except OSError as exc:
        raise ConfigError(str(args.rotation), None, f"cannot read: {exc.strerror}") from exc
    if args.device_id not in (None, rotation.dev):
        raise ConfigError(str(args.rotation), None, f"the record rotates {rotation.dev}, "
                                                    f"not {args.device_id}")
    if args.pubkey is not None and _read_key(args.pubkey, "PUBKEY")[0] != rotation.new:
        raise ConfigError(str(args.rotation), None, "the record's new key is not PUBKEY")
    store = open_any_store(load_aggregator_config(args.config))
    try:
        action = _rotate_in_store(store, rotation)
    finally:
        store.close()
    done = "applied" if action is Action.ROTATE else "already applied, unchanged:"
    print(f"{done} {rotation.describe()} in {store.path}")
    return EXIT_OK


def _rotate_in_store(store: SqliteStore | PostgresStore, rotation: Rotation) -> Action:
    """Apply `rotation` with its event; a forged or stale one is journalled, then re-raised."""
    from edgeledger.aggregator.ingest import rotate_device

    action: Action = rotate_device(store, rotation, _now_ms())
    return action


def _revoke(args: argparse.Namespace) -> int:
    from edgeledger.aggregator.config import load_aggregator_config, open_any_store
    from edgeledger.aggregator.enrollment import Action, decide_revoke

    dev = args.device_id
    store = open_any_store(load_aggregator_config(args.config))
    try:
        with store.transaction():
            action = decide_revoke(dev, _device_state(store, dev))
            if action is Action.REVOKE:
                now = _now_ms()
                store.revoke(dev, now)
                store.add_event("revoked", dev, None, args.reason, now)
        device = store.device(dev)
    finally:
        store.close()
    assert device is not None
    what = "revoked" if action is Action.REVOKE else "already revoked, unchanged:"
    print(f"{what} {dev} (at {device.revoked_ms} ms; its {device.next_height} block(s) stay "
          f"in the log)")
    return EXIT_OK


def _devices(args: argparse.Namespace) -> int:
    from edgeledger.aggregator.config import load_aggregator_config, open_any_store
    from edgeledger.aggregator.enrollment import kid

    store = open_any_store(load_aggregator_config(args.config))
    try:
        devices = store.devices()
    finally:
        store.close()
    for d in devices:
        status = "revoked" if d.revoked_ms is not None else "enrolled"
        flag = " flagged" if d.flagged_ms is not None else ""
        print(f"{d.dev} {status}{flag} key {kid(d.public_key)} {b64.encode(d.public_key)} "
              f"next-height {d.next_height}")
    print(f"{len(devices)} device(s)", file=sys.stderr)
    return EXIT_OK


def _rotate_key(args: argparse.Namespace) -> int:
    from edgeledger.aggregator.enrollment import make_rotation, rotation_topic
    from edgeledger.sync.topics import DEFAULT_PREFIX

    old = load_signer(args.old_key)
    dev = args.device or old.name
    new, name = _read_key(args.new_key, "--new-key")
    if name is not None and name != dev:
        raise ConfigError(args.new_key, None, f"the new key is named {name!r}, not {dev!r}")
    rotation = make_rotation(old, dev, new, _now_ms())
    try:
        with open(args.out, "xb") as out:
            out.write(rotation.encode())
    except FileExistsError as exc:
        raise ConfigError(str(args.out), None, "already exists; refusing to overwrite") from exc
    except OSError as exc:
        raise ConfigError(str(args.out), None, f"cannot create: {exc.strerror}") from exc
    print(f"wrote {args.out}: {rotation.describe()}")
    print(f"apply it: edgeledger enroll --config AGGREGATOR.toml --rotation {args.out}")
    print(f"or publish it on {rotation_topic(DEFAULT_PREFIX, dev)} (your prefix)")
    return EXIT_OK


def _agent(args: argparse.Namespace) -> int:
    from edgeledger.gateway.agent import run_agent

    return run_agent(args.config, args.data_dir, args.log_level)


def _aggregator(args: argparse.Namespace) -> int:
    from edgeledger.aggregator.server import run_aggregator

    return run_aggregator(args.config, args.log_level)


def _check_config(args: argparse.Namespace) -> int:
    from edgeledger.config import check_config_files

    return check_config_files(args.files)


def _log_verify(args: argparse.Namespace) -> int:
    from edgeledger.gateway.logverify import run_log_verify

    return run_log_verify(args.data_dir)


def _demo(args: argparse.Namespace) -> int:
    from edgeledger.demo import DemoOptions, run_demo

    return run_demo(DemoOptions(gateways=args.gateways, seconds=args.seconds, dir=args.dir,
                                http=args.http, broker=args.broker, seed=args.seed))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


if __name__ == "__main__":
    sys.exit(main())
