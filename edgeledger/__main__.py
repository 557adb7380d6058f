"""`python -m edgeledger`: the same as the `edgeledger` command."""

import sys

from edgeledger.cli import main

sys.exit(main())
