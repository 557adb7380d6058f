"""`python -m benchmarks.sync`: see benchmarks/sync/bench.py."""

import sys

from benchmarks.sync.bench import main

sys.exit(main())
