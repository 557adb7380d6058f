"""The `edgeledger` command (DESIGN.md section 8)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeledger import __version__
from edgeledger.core import b64
from edgeledger.core.bundle import ProofBundle, verify_bundle
from edgeledger.core.errors import ConfigError, DecodeError, EdgeLedgerError, VerificationError
from edgeledger.core.note import Signer, valid_name
from edgeledger.keyfile import load_verifier, write_signer

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

    agent = sub.add_parser("agent", help="the gateway agent, in the foreground (systemd's "
                                         "ExecStart)")
    agent.add_argument("--config", required=True, type=Path, help="agent TOML file")
    agent.add_argument("--data-dir", type=Path, help="overrides [device] data_dir")
    agent.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    agent.set_defaults(run=_agent)

    check = sub.add_parser("check-config", help="validate agent and aggregator TOML files")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.set_defaults(run=_check_config)

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


def _agent(args: argparse.Namespace) -> int:
    from edgeledger.gateway.agent import run_agent

    return run_agent(args.config, args.data_dir, args.log_level)


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
