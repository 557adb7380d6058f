"""The gateway agent: chain, journal, sealing."""
