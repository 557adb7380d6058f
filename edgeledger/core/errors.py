"""One exception hierarchy for EdgeLedger, split by who must act on a failure.

Every message names what is wrong and where (file, key, device, frame, height,
index), so that an operator can act on it without reading the code.
"""

from __future__ import annotations

EX_CONFIG = 78
"""Exit status for a ConfigError (sysexits.h EX_CONFIG): the unit files stop restarting
on it, since restarting cannot fix a configuration."""


class EdgeLedgerError(Exception):
    """Root of every error EdgeLedger raises on purpose."""


class DecodeError(EdgeLedgerError):
    """Bytes or text that do not parse as the format they claim to be."""


class VerificationError(EdgeLedgerError):
    """Well-formed data that fails a cryptographic or consistency check.

    `check` names the check that failed (for example ``"block signature"``),
    so callers such as ``edgeledger verify`` can report which one.
    """

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


class ConfigError(EdgeLedgerError):
    """A configuration or key file that cannot be used as given."""

    def __init__(self, path: str, key: str | None, reason: str) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


class TransportError(EdgeLedgerError):
    """A peer, broker, device or disk that did not do what was asked."""
