"""Training throughput of flaxdigits models: steady-state samples/s, compile time, start-up.

    python benchmarks/train_throughput.py --data-dir ../shared/data/mnist [--batch-sizes 32 128]
        [--models mlp cnn] [--epochs 5] [--json OUT.json]

Per model and batch size it trains for `--epochs` epochs (the seed MLP 784-100-10, or the
cnn-fast recipe's CNN without augmentation, Adam 1e-3) and reports the median steady-state
samples/s (epochs after the first) with min..max, the compile time, and the first epoch. Separately it times a fresh process from start to its first finished training step
(imports, reading and verifying the IDX files, compiling and running one step). Machines here are
shared, so the load average is printed beside the figures. Needs only jax/flax/optax/numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What the child process runs: everything a user's first step needs, from a cold start.
FIRST_STEP = """
import sys
from flaxdigits.data import load_mnist
from flaxdigits.training import TrainConfig, create_state, enable_compilation_cache, train_step
import jax
if sys.argv[2]:
    enable_compilation_cache(sys.argv[2])
data = load_mnist("idx", sys.argv[1])
config = TrainConfig()
state = create_state(config)
x = data.train_images[:config.batch_size].reshape(config.batch_size, 784)
state, metrics = jax.jit(train_step)(state, (x, data.train_labels[:config.batch_size]))
jax.block_until_ready(metrics)
print("step done", flush=True)
"""


def time_to_first_step(data_dir: str, cache_dir: str = "") -> float:
    """Seconds from launching a fresh Python process to its first finished training step.

    With `cache_dir`, the process uses JAX's persistent compilation cache there, as the CLI does.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", FIRST_STEP, data_dir, cache_dir], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    proc.wait()
    if line.strip() != "step done":
        raise RuntimeError("the first-step process failed")
    return elapsed


def throughput(data, model: str, batch_size: int, epochs: int) -> dict:
    """Train `model` ("mlp" or "cnn") at `batch_size`; steady-state epochs exclude the compile."""
    from flaxdigits.models import ModelConfig
    from flaxdigits.training import TrainConfig, train

    config = TrainConfig(model=ModelConfig(kind=model), batch_size=batch_size, epochs=epochs)
    result = train(config, data)
    rates = [h["samples_per_second"] for h in result.history]
    steady = rates[1:] or rates
    return {
        "model": model,
        "loop": config.resolved_loop(),
        "batch_size": batch_size,
        "samples_per_second_median": statistics.median(steady),
        "samples_per_second_min": min(steady),
        "samples_per_second_max": max(steady),
        "compile_seconds": result.compile_seconds,
        "first_epoch_seconds": result.history[0]["seconds"],
        "epoch_seconds": [h["seconds"] for h in result.history],
        "test_accuracy": result.test_accuracy,
    }


def machine() -> dict:
    """Facts about where the numbers were taken."""
    import jax

    return {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpus": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "loadavg": os.getloadavg(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("FLAXDIGITS_DATA_DIR"),
                    help="folder with the official IDX files (default: $FLAXDIGITS_DATA_DIR)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--models", nargs="+", choices=["mlp", "cnn"], default=["mlp"])
    ap.add_argument("--epochs", type=int, default=5, help="epochs per batch size (first "
                    "is reported separately; the rest are steady state)")
    ap.add_argument("--starts", type=int, default=3, help="fresh processes timed to first step")
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args(argv)
    if not args.data_dir:
        ap.error("pass --data-dir or set FLAXDIGITS_DATA_DIR")

    from flaxdigits.data import load_mnist

    cold = [time_to_first_step(args.data_dir) for _ in range(args.starts)]
    with tempfile.TemporaryDirectory() as cache:
        time_to_first_step(args.data_dir, cache)  # fills the cache
        warm = [time_to_first_step(args.data_dir, cache) for _ in range(args.starts)]
    data = load_mnist("idx", args.data_dir)
    rows = [throughput(data, m, b, args.epochs) for m in args.models for b in args.batch_sizes]
    report = {"machine": machine(), "first_step_seconds": {"cold": cold, "cached": warm},
              "runs": rows}

    m = report["machine"]
    print(f"\n{m['processor']}, {m['cpus']} CPUs, backend {m['backend']}, jax {m['jax']}, "
          f"load average {' '.join(f'{x:.2f}' for x in m['loadavg'])}\n")
    print("| model | loop | batch | samples/s (median) | min .. max | compile s | first epoch s "
          "| test acc |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['loop']} | {r['batch_size']} | "
              f"{r['samples_per_second_median']:,.0f} | "
              f"{r['samples_per_second_min']:,.0f} .. {r['samples_per_second_max']:,.0f} | "
              f"{r['compile_seconds']:.2f} | {r['first_epoch_seconds']:.2f} | "
              f"{r['test_accuracy']:.2%} |")
    for name, starts in (("no compilation cache", cold), ("compilation cache (CLI)", warm)):
        print(f"process start to first finished training step, {name}: "
              f"{', '.join(f'{s:.2f}' for s in starts)} s (median {statistics.median(starts):.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
