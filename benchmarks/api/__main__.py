"""`python -m benchmarks.api`: see benchmarks/api/bench.py."""

import sys

from benchmarks.api.bench import main

if __name__ == "__main__":
    sys.exit(main())
