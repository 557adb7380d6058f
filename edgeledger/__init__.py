"""EdgeLedger: signed sensor readings from IoT gateways, provable in an RFC 6962 log."""

__version__ = "0.1.0"
