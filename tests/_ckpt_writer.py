"""Helper process for the SIGKILL test: saves checkpoints in a loop until killed."""

import sys

import numpy as np

from flaxdigits.checkpoint_file import save

path = sys.argv[1]
rng = np.random.default_rng(int(sys.argv[2]))
i = 0
while True:
    n = int(rng.integers(1, 400_000))  # sizes vary so that a mixed file could not pass
    save(path, {"params": {"w": rng.standard_normal(n, dtype=np.float32)}},
         {"kind": "kill-test", "i": i, "n": n})
    if i == 0:
        print("ready", flush=True)
    i += 1
