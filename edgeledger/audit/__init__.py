"""The auditor's tool: check an aggregator's log and devices through its HTTP API.

`edgeledger audit --api URL --log-key VKEY` verifies the whole chain of signed
checkpoints (signatures, heights, prev links, RFC 9162 consistency), remembers the
last one in a state file so the next run checks only what is new and that the log
did not fork or roll back, and with `--device`/`--all-devices` re-verifies every
block of those devices (signature, chain, readings' root, inclusion in the log).

Layout: `responses` (strict JSON parsing), `chain` and `blocks` (pure checks, no
I/O), `client` (HTTP, standard library), `walk` (fetch and check), `state`,
`progress`, `run` (options, output, exit status). See docs/audit.md.
"""

from edgeledger.audit.run import AuditOptions, run_audit

__all__ = ["AuditOptions", "run_audit"]
