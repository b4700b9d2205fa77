"""The benchmark runner from a checkout: the same as `flaxdigits bench`.

    python benchmarks/bench.py --quick --data-dir DIR

The runner and its workers live in the package (`flaxdigits.bench`), so that `flaxdigits bench`
works from any install; results and their story are in docs/benchmarks.md and docs/bench/.
"""

import sys

from flaxdigits.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
