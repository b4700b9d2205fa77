"""flaxdigits benchmarks: training throughput beside Keras and PyTorch, start-up, inference latency.

    flaxdigits bench [--quick] [--models mlp cnn] [--batch-sizes 32 128 1024 ...]
        [--peers lax-conv keras torch torch-cl torch-compile ceiling] [--epochs 4]
        [--repeats N] [--unroll U] [--compute-dtype bfloat16]
        [--time-to ACC [ACC ...]] [--time-to-seeds N] [--recipe cnn-fast] [--ensembles 1 4 16]
        [--json OUT.json] [--plot OUT.png] [--data-dir DIR]
    (or: python benchmarks/bench.py ..., or python -m flaxdigits.bench.runner ...)

Every (model, batch size, framework) row trains in a fresh process (flaxdigits.bench.workers)
on the same IDX data with the seed recipe (Adam 1e-3, pixels / 255), the MLP or the CNN of
`cnn-fast` (in Keras, and in PyTorch NCHW, channels_last and compiled; and flaxdigits' own CNN
through XLA's convolution op, "lax-conv"): steady-state samples/s is the
median over the epochs after the first (min..max beside it), the first epoch includes compiling
or tracing, start -> first step times the process from launch to its first finished training
step, and peak memory is the process's peak RSS (and the device's peak on a GPU). The peers are
optional: a framework that is not installed is reported in the table, not crashed on. Rows show
flaxdigits / peer ratios, since absolute times drift on shared machines. The ceiling row is no
framework: an epoch of only the step's matmuls (the MLP's, or the CNN's at im2col's shapes;
flaxdigits.bench.ceiling), the most this hardware allows any loop built on them, so
flaxdigits / ceiling is the share of the machine the library uses. Then it times inference
per image and per 1,000 images in JAX and, where TensorFlow and ai-edge-litert are installed, in
LiteRT (one thread, batch 1, every quantization). Needs only the core install: without the
`keras`, `torch`, `export` or `litert` extras those parts say they were skipped, and the plot
needs the `report` extra. `--ensembles K ...` adds rows of K seed-recipe MLPs trained at once
(one compiled program): model-samples/s (K per image) and its ratio to K separate runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from flaxdigits.bench import median_known
from flaxdigits.config import ModelConfig, TrainConfig, choices
from flaxdigits.data import load_idx
from flaxdigits.errors import need
from flaxdigits.export import QUANTIZE, calibration_images, export_tflite
from flaxdigits.inference import Classifier
from flaxdigits.litert import LiteRTClassifier
from flaxdigits.plots import pyplot
from flaxdigits.training import create_model_and_optimizer

# framework -> (worker module, extra arguments, the models it has rows for). "lax-conv" is
# flaxdigits' CNN through XLA's convolution op in a per-batch loop, its CPU path before im2col.
FRAMEWORKS = {"flaxdigits": ("flaxdigits_train", [], ("mlp", "cnn")),
              "lax-conv": ("flaxdigits_train", ["--conv", "lax"], ("cnn",)),
              "keras": ("keras_peer", [], ("mlp", "cnn")),
              "torch": ("torch_peer", [], ("mlp", "cnn")),
              "torch-cl": ("torch_peer", ["--channels-last"], ("cnn",)),
              "torch-compile": ("torch_peer", ["--compile"], ("cnn",)),
              "ceiling": ("matmul_ceiling", [], ("mlp", "cnn"))}
PEERS = [f for f in FRAMEWORKS if f != "flaxdigits"]
INSTALL = {"keras": "pip install 'flaxdigits[keras]'", "torch": "pip install 'flaxdigits[torch]'",
           "torch-cl": "pip install 'flaxdigits[torch]'",
           "torch-compile": "pip install 'flaxdigits[torch]'"}
# framework -> its time-to-accuracy worker
TIME_TO = {"flaxdigits": "flaxdigits_time_to", "torch": "torch_time_to"}
# Modules whose distribution has another name, in the order to try.
DISTRIBUTIONS = {"ai_edge_litert": ["ai-edge-litert"],
                 "tensorflow": ["tensorflow", "tensorflow-cpu"]}
WORKER_TIMEOUT = 3600


def launch(worker: str, *args: str) -> tuple[dict[str, Any] | None, float | None, str | None]:
    """Run worker module `worker` in a fresh process: (its JSON result, seconds from launch to
    its `first-step` line, error). A worker still running after WORKER_TIMEOUT is killed, so a
    hung one fails its row instead of the whole run."""
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", f"flaxdigits.bench.workers.{worker}",
                                 *args], stdout=subprocess.PIPE, stderr=err, text=True)
        first_step, result, timed_out = None, None, []

        def kill():
            timed_out.append(True)
            proc.kill()

        watchdog = threading.Timer(WORKER_TIMEOUT, kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                if line.strip() == "first-step" and first_step is None:
                    first_step = time.perf_counter() - t0
                elif line.startswith("{"):
                    result = json.loads(line)
            proc.wait()
        finally:
            watchdog.cancel()
        err.seek(0)
        stderr = err.read().strip().splitlines()
    if timed_out:
        return None, first_step, f"no result within {WORKER_TIMEOUT} s"
    if result is None or proc.returncode != 0:
        return None, first_step, stderr[-1] if stderr else f"exit status {proc.returncode}"
    return result, first_step, None


def run_worker(framework: str, data_dir: str, model: str, batch_size: int, epochs: int,
               n_train: int | None = None, threads: int = 0, cache: str = "",
               unroll: int = 1, compute_dtype: str = "float32",
               ensemble: int = 1) -> dict[str, Any]:
    """Train in a fresh process; its measurements plus seconds from launch to the first step."""
    args = [data_dir, model, str(batch_size), str(epochs), "--threads", str(threads),
            "--cache", cache, "--unroll", str(unroll), "--compute-dtype", compute_dtype] + (
                ["--n-train", str(n_train)] if n_train else []) + (
                ["--ensemble", str(ensemble)] if ensemble > 1 else [])
    worker, extra, _ = FRAMEWORKS[framework]
    result, first_step, error = launch(worker, *args, *extra)
    row: dict[str, Any] = {"model": model, "framework": framework, "batch_size": batch_size}
    if error:
        row["error"] = error
        return row
    row.update(result, framework=framework, first_step_seconds=first_step)
    if "epoch_seconds" in result:
        row["samples_per_second"] = [result["samples_per_epoch"] / s
                                     for s in result["epoch_seconds"]]
        row["first_epoch_seconds"] = (result["epoch_seconds"][0]
                                      + (result.get("compile_seconds") or 0.0))
    return row


def time_to_accuracy(data_dir: str, recipe: str, targets: list[float], seeds: int = 1,
                     n_train: int | None = None, compute_dtype: str = "float32",
                     framework: str = "flaxdigits", threads: int = 0) -> list[dict[str, Any]]:
    """Train `recipe` in `framework` (flaxdigits or torch) for seeds 0..seeds-1, each in a
    fresh process, until its test accuracy reaches every target; one row per target: mean ± std
    over the seeds that reached it of the training seconds and epochs (compilation apart), as
    speed records report time to accuracy."""
    runs = []
    for seed in range(seeds):
        args = [data_dir, recipe, *map(str, targets), "--seed", str(seed)] + (
            ["--n-train", str(n_train)] if n_train else []) + (
            ["--compute-dtype", compute_dtype] if framework == "flaxdigits"
            else ["--threads", str(threads)])
        result, _, error = launch(TIME_TO[framework], *args)
        runs.append(result or {"seed": seed, "error": error})
        if "missing" in runs[-1]:
            break  # not installed: no point trying the other seeds
    rows = []
    for target in targets:
        row: dict[str, Any] = {"framework": framework, "recipe": recipe, "target": target,
                               "seeds": seeds, "compute_dtype": compute_dtype, "runs": []}
        for run in runs:
            if "missing" in run:
                row["missing"] = run["missing"]
                continue
            if "error" in run:
                row["runs"].append(run)
                continue
            row["device"] = run["device"]
            row["runs"].append({"seed": run["seed"], "compile_seconds": run["compile_seconds"],
                                "test_accuracy": run["test_accuracy"],
                                **run["targets"][str(target)]})
        done = [r for r in row["runs"] if r.get("reached")]
        row["reached"] = len(done)
        for key in ("train_seconds", "epochs", "compile_seconds"):
            values = [r[key] for r in done if r[key] is not None]  # PyTorch compiles nothing
            row[f"{key}_mean"] = statistics.mean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from repeated runs of a worker: steady-state samples/s over the epochs
    after the first of every run (median, min, max); medians of the one-off times."""
    failed = [r for r in runs if "samples_per_second" not in r]
    if failed:
        return failed[0]
    steady = [x for r in runs for x in (r["samples_per_second"][1:] or r["samples_per_second"])]
    row = {k: v for k, v in runs[0].items() if k not in ("epoch_seconds", "samples_per_second")}
    row.update(
        repeats=len(runs),
        samples_per_second_median=statistics.median(steady),
        samples_per_second_min=min(steady), samples_per_second_max=max(steady),
        first_epoch_seconds=statistics.median(r["first_epoch_seconds"] for r in runs),
        first_step_seconds=median_known(r["first_step_seconds"] for r in runs),
        peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
        # None for a measure the worker does not take (the ceiling's accuracy)
        test_accuracy=median_known(r["test_accuracy"] for r in runs),
        runs=[{k: r[k] for k in ("epoch_seconds", "samples_per_second", "first_step_seconds",
                                 "first_epoch_seconds", "test_accuracy")} for r in runs])
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """flaxdigits samples/s over each peer's, in the peer's row (below 1 for the ceiling)."""
    ours = {(r["model"], r["batch_size"]): r.get("samples_per_second_median")
            for r in rows if r["framework"] == "flaxdigits"}
    for r in rows:
        mine = ours.get((r["model"], r["batch_size"]))
        if r["framework"] != "flaxdigits" and mine and r.get("samples_per_second_median"):
            r["flaxdigits_ratio"] = mine / r["samples_per_second_median"]


def ensemble_rows(data_dir: str, ensembles: list[int], batch_sizes: list[int], epochs: int,
                  n_train: int | None, repeats: int, unroll: int = 1,
                  compute_dtype: str = "float32") -> list[dict[str, Any]]:
    """K seed-recipe MLPs trained at once (one compiled program) for each K and batch size, each
    in a fresh process, round robin over `repeats`: model-samples/s (K per image), and its
    ratio to K separate runs, that is to one model's samples/s (the K = 1 row)."""
    keys = [(batch, k) for batch in batch_sizes for k in sorted(set([1, *ensembles]))]
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {key: [] for key in keys}
    for _ in range(repeats):
        for batch, k in keys:
            run = run_worker("flaxdigits", data_dir, "mlp", batch, epochs, n_train,
                             unroll=unroll, compute_dtype=compute_dtype, ensemble=k)
            runs[batch, k].append(run)
            rates = run.get("samples_per_second")
            print(f"mlp x{k} batch {batch}: " + (
                f"{statistics.median(rates[1:] or rates):,.0f} model-samples/s" if rates
                else run.get("error", "")), file=sys.stderr, flush=True)
    rows = []
    for (batch, k), v in runs.items():
        row = combine(v)
        row["ensemble"] = k
        one = combine(runs[batch, 1]).get("samples_per_second_median")
        if one and row.get("samples_per_second_median") and k in ensembles:
            row["separate_runs_ratio"] = row["samples_per_second_median"] / one
        if k in ensembles:
            rows.append(row)
    return rows


def _median_seconds(fn, reps: int) -> float:
    fn()  # compile / allocate first
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def untrained(kind: str) -> Classifier:
    """A freshly initialised `Classifier` of `kind`: timing needs no training."""
    config = TrainConfig(model=ModelConfig(kind=kind))
    model, _ = create_model_and_optimizer(config)
    return Classifier(config.model, nnx.state(model, nnx.Param))


def inference(data, models: dict[str, Any], reps: int, score: bool) -> list[dict[str, Any]]:
    """Median seconds per image and per 1,000 images in JAX and (when installed) in LiteRT for
    every quantization; with `score`, also test accuracy and agreement with JAX on all test
    images."""
    one, thousand = data.test_images[:1], data.test_images[:1000]
    missing = [m for m in ("tensorflow", "ai_edge_litert") if not importlib.util.find_spec(m)]
    if not missing:
        calibration = calibration_images(data.train_images)
        x = one.astype("float32").reshape(1, 28, 28, 1)
    rows = []
    for name, model in models.items():
        row = {"model": name, "runtime": f"jax ({jax.default_backend()})", "variant": "float32",
               "image_seconds": _median_seconds(lambda: model.predict(one), reps),
               "thousand_seconds": _median_seconds(lambda: model.predict(thousand),
                                                   max(3, reps // 20))}
        rows.append(row)
        if score:
            expected = model.predict(data.test_images)
            row["test_accuracy"] = float(np.mean(expected.argmax(1) == data.test_labels))
        if missing:
            rows.append({"model": name, "runtime": "litert",
                         "skipped": f"{' and '.join(missing)} not installed (pip install "
                                    f"'flaxdigits[export]')"})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            for quantize in QUANTIZE:
                path = Path(tmp) / f"{quantize}.tflite"
                export_tflite(model, path, quantize, calibration=calibration)
                lite = LiteRTClassifier.load(path)
                row = {"model": name, "runtime": "litert (1 thread, batch 1)",
                       "variant": quantize, "bytes": path.stat().st_size,
                       "image_seconds": _median_seconds(lambda: lite.invoke(x), reps),
                       "thousand_seconds": _median_seconds(lambda: lite.predict(thousand),
                                                           max(3, reps // 100))}
                if score:
                    probs = lite.predict(data.test_images)
                    row.update(test_accuracy=float(np.mean(probs.argmax(1) == data.test_labels)),
                               agreement=float(np.mean(probs.argmax(1) == expected.argmax(1))),
                               max_probability_difference=float(np.abs(probs - expected).max()))
                rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    """Where the numbers were taken: processor, device, versions, load."""
    versions = {"python": platform.python_version(), "jax": jax.__version__}
    for name in ("flax", "optax", "numpy", "tensorflow", "keras", "torch", "ai_edge_litert"):
        if importlib.util.find_spec(name):
            for dist in DISTRIBUTIONS.get(name, [name]):
                try:
                    versions[name] = version(dist)
                    break
                except PackageNotFoundError:  # installed under another distribution's name
                    pass
    return {"platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count(),
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "versions": versions, "loadavg_start": os.getloadavg()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _dtype(row: dict[str, Any]) -> str:
    dtype = row.get("compute_dtype", "float32")
    return "" if dtype == "float32" else f" ({dtype})"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    m = report["machine"]
    lines = [f"{m['processor']}, {m['cpus']} CPUs, backend {m['backend']} "
             f"({', '.join(m['devices'])}); load average "
             f"{' '.join(f'{x:.2f}' for x in m['loadavg_start'])} at start, "
             f"{' '.join(f'{x:.2f}' for x in m['loadavg_end'])} at the end"]
    if report["training"]:
        lines += ["", "| model | framework | batch | samples/s (median) | min .. max "
                  "| flaxdigits × | first epoch s | start → first step s | peak RSS MiB "
                  "| test acc |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["training"]:
        head = f"| {r['model']} | {r['framework']}{_dtype(r)} | {r['batch_size']} |"
        if "missing" in r or "error" in r:
            why = (f"not installed ({INSTALL.get(r['framework'], '')}): {r['missing']}"
                   if "missing" in r else f"failed: {r['error']}")
            lines.append(f"{head} {why} | | | | | | |")
            continue
        if "samples_per_second_median" not in r:
            continue
        lines.append(
            f"{head} {r['samples_per_second_median']:,.0f} | {r['samples_per_second_min']:,.0f}"
            f" .. {r['samples_per_second_max']:,.0f} | "
            f"{_num(r.get('flaxdigits_ratio'), '.2f')} | {r['first_epoch_seconds']:.2f} | "
            f"{_num(r['first_step_seconds'], '.2f')} | {r['peak_rss_mb']:,.0f} | "
            f"{_num(r['test_accuracy'], '.2%')} |")
    for r in report.get("time_to_accuracy", []):
        head = f"{r['framework']}: `{r['recipe']}` to {r['target']:.1%} test accuracy"
        if "missing" in r:
            lines += ["", f"{head}: not installed ({INSTALL[r['framework']]}): {r['missing']}"]
            continue
        failed = [f"seed {x['seed']} failed: {x['error']}" for x in r["runs"] if "error" in x]
        missed = [f"seed {x['seed']} did not reach it (best {max(x['test_accuracy']):.2%})"
                  for x in r["runs"] if "error" not in x and not x["reached"]]
        head += f", {r['seeds']} seeds"
        if r["reached"]:
            compile_ = (f" (+{r['compile_seconds_mean']:.2f} s compile)"
                        if r["compile_seconds_mean"] is not None else "")
            head += (f": {r['train_seconds_mean']:.2f} ± {r['train_seconds_std']:.2f} s of "
                     f"training, {r['epochs_mean']:.1f} ± {r['epochs_std']:.1f} epochs"
                     f"{compile_} on {r['device']}{_dtype(r)}")
        lines += ["", "; ".join([head, *missed, *failed])]
    if report.get("ensembles"):
        lines += ["", "| seed MLPs at once (K) | batch | model-samples/s (median) | min .. max "
                  "| × K separate runs | first epoch s | test acc (ensemble) |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in report["ensembles"]:
            if "samples_per_second_median" not in r:
                lines.append(f"| {r.get('ensemble')} | {r['batch_size']} | failed: "
                             f"{r.get('error')} | | | | |")
                continue
            lines.append(
                f"| {r['ensemble']} | {r['batch_size']} | {r['samples_per_second_median']:,.0f} | "
                f"{r['samples_per_second_min']:,.0f} .. {r['samples_per_second_max']:,.0f} | "
                f"{_num(r.get('separate_runs_ratio'), '.2f')} | {r['first_epoch_seconds']:.2f} | "
                f"{_num(r['test_accuracy'], '.2%')} |")
    startup = report.get("startup")
    if startup:
        lines += ["", "flaxdigits MLP, process start to first finished training step: "
                  + "; ".join(f"{k} {', '.join(f'{s:.2f}' for s in v)} s"
                              for k, v in startup.items())]
    if report.get("inference"):
        lines += ["", "| model | runtime | variant | file KiB | test acc | agreement | max Δp "
                  "| per image µs | 1,000 images ms |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in report["inference"]:
            if "skipped" in r:
                lines.append(f"| {r['model']} | {r['runtime']} | skipped: {r['skipped']} "
                             f"| | | | | | |")
                continue
            size = _num(r["bytes"] / 1024 if "bytes" in r else None, ",.0f")
            acc = _num(r.get("test_accuracy") and 100 * r["test_accuracy"], ".2f")
            agree = _num(r.get("agreement") and 100 * r["agreement"], ".2f")
            lines.append(f"| {r['model']} | {r['runtime']} | {r['variant']} | {size} | {acc} | "
                         f"{agree} | {_num(r.get('max_probability_difference'), '.1e')} | "
                         f"{r['image_seconds'] * 1e6:,.0f} | {r['thousand_seconds'] * 1e3:,.1f} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    """Samples/s against batch size, one line per framework and model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.2), layout="constrained")
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in report["training"]:
        if "samples_per_second_median" in r:
            series.setdefault((r["framework"], r["model"]), []).append(
                (r["batch_size"], r["samples_per_second_median"]))
    dtypes = {r["framework"]: _dtype(r) for r in report["training"]}
    colors = {"flaxdigits": "tab:blue", "lax-conv": "tab:cyan", "keras": "tab:red",
              "torch": "tab:orange", "torch-cl": "tab:brown", "torch-compile": "tab:pink",
              "ceiling": "tab:gray"}
    for (framework, model), points in sorted(series.items()):
        points.sort()
        ceiling = framework == "ceiling"
        ax.plot(*zip(*points), marker="o" if model == "mlp" else "s", color=colors[framework],
                linestyle=":" if ceiling else "-" if model == "mlp" else "--",
                label=(f"ceiling (matmuls only), {model}" if ceiling else f"{framework}, {model}")
                + dtypes.get(framework, ""))
    sizes = sorted({r["batch_size"] for r in report["training"]})
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="training samples/s",
           title=f"Training throughput ({report['machine']['backend']}, "
                 f"{report['machine']['processor']})")
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right center")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    """The runner's arguments."""
    ap = argparse.ArgumentParser(prog="flaxdigits bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run: 2 epochs of 15,000 "
                    "images, fewer timing repeats, the MLP unless --models says otherwise")
    ap.add_argument("--models", nargs="+", choices=["mlp", "cnn"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--peers", nargs="*", choices=PEERS, default=PEERS,
                    help="what to compare with (default: all): the Keras and PyTorch peers "
                    "(MLP and CNN), PyTorch's channels_last and compiled CNNs (torch-cl, "
                    "torch-compile), flaxdigits' CNN through XLA's conv op (lax-conv), and the "
                    "ceiling, an epoch of only the step's matmuls; torch also adds PyTorch's "
                    "--time-to")
    ap.add_argument("--epochs", type=int, help="epochs per row: the first is reported apart, "
                    "the rest are steady state (default: 4; --quick: 2)")
    ap.add_argument("--repeats", type=int, default=1, help="run every row this many times, "
                    "round robin, and pool their epochs (default: 1)")
    ap.add_argument("--n-train", type=int, help="train on the first N images (default: all "
                    "60,000; --quick: 15,000)")
    ap.add_argument("--torch-threads", type=int, default=0, help="PyTorch's intra-op threads "
                    "(default 0: PyTorch's own choice, fastest on a quiet machine; 1 is steadier "
                    "on a busy one, where 2 threads collapsed ~10x)")
    ap.add_argument("--unroll", type=int, default=1, help="scan steps per loop iteration in "
                    "the flaxdigits and ceiling rows (default: 1; on CPU more ran no faster, "
                    "on a GPU try 4-16)")
    ap.add_argument("--compute-dtype", choices=choices(TrainConfig, "compute_dtype"),
                    default=TrainConfig.compute_dtype,
                    help="matmul dtype of the flaxdigits, ceiling and --time-to runs "
                    "(parameters stay float32; bfloat16 is for GPUs, slower on CPU)")
    ap.add_argument("--starts", type=int, help="extra fresh processes timed to the first step, "
                    "without and with the compilation cache (default: 3; --quick: 1)")
    ap.add_argument("--time-to", type=float, nargs="+", metavar="ACC", help="also train "
                    "--recipe until the test accuracy reaches each ACC (e.g. 0.99 0.995) and "
                    "report the training time and epochs to each, in flaxdigits and (if a torch "
                    "peer is asked for) in PyTorch")
    ap.add_argument("--time-to-seeds", type=int, default=1, metavar="N", help="--time-to over "
                    "seeds 0..N-1, each in a fresh process: mean ± std (default: 1)")
    ap.add_argument("--recipe", default="cnn-fast", help="the recipe for --time-to "
                    "(default: cnn-fast)")
    ap.add_argument("--ensembles", type=int, nargs="+", default=[], metavar="K",
                    help="also train K seed-recipe MLPs at once (one compiled program) for each "
                    "K, e.g. 1 4 16, at each --batch-sizes: model-samples/s and the ratio to K "
                    "separate runs (default: none)")
    ap.add_argument("--no-training", dest="training", action="store_false",
                    help="skip the training rows and start-up timings")
    ap.add_argument("--no-inference", dest="inference", action="store_false",
                    help="skip the inference latency tables")
    ap.add_argument("--checkpoints", nargs="+", metavar="CKPT", help="time (and score on all "
                    "test images) these trained models, exported in every quantization, instead "
                    "of freshly initialised ones")
    ap.add_argument("--data-dir", default=os.environ.get("FLAXDIGITS_DATA_DIR"),
                    help="folder with the official IDX files (default: $FLAXDIGITS_DATA_DIR)")
    ap.add_argument("--json", metavar="OUT", help="write the raw numbers here")
    ap.add_argument("--plot", metavar="OUT.png", help="draw samples/s against batch size")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks, print Markdown tables, write JSON and plot if asked."""
    ap = parser()
    args = ap.parse_args(argv)
    if not args.data_dir:
        ap.error("the benchmarks read the MNIST IDX files: pass --data-dir DIR or set "
                 "FLAXDIGITS_DATA_DIR")
    if args.plot:  # say so now, not after the whole run
        need("matplotlib", "report", "bench --plot")
    if (any(b < 1 for b in args.batch_sizes) or args.repeats < 1 or args.unroll < 1
            or args.time_to_seeds < 1 or any(k < 1 for k in args.ensembles)):
        ap.error("batch sizes, --repeats, --unroll, --time-to-seeds and --ensembles must be "
                 "positive")
    models = args.models or (["mlp"] if args.quick else ["mlp", "cnn"])
    epochs = args.epochs or (2 if args.quick else 4)
    n_train = args.n_train or (15_000 if args.quick else None)
    reps = 50 if args.quick else 500
    starts = args.starts if args.starts is not None else (1 if args.quick else 3)

    data = load_idx(args.data_dir)  # verifies the files before any worker starts
    report: dict[str, Any] = {"machine": machine(), "epochs": epochs,
                              "n_train": n_train or len(data.train_images), "training": []}
    rows = [(model, batch, framework) for model in (models if args.training else [])
            for batch in args.batch_sizes
            for framework in ["flaxdigits", *args.peers] if model in FRAMEWORKS[framework][2]]
    runs: dict[tuple[str, int, str], list[dict[str, Any]]] = {key: [] for key in rows}
    # Round robin over the rows, so that drift in the machine's load spreads over all of them.
    for _ in range(args.repeats):
        for model, batch, framework in rows:
            if runs[model, batch, framework][-1:] and \
                    "samples_per_second" not in runs[model, batch, framework][-1]:
                continue  # missing or broken: no point repeating it
            threads = args.torch_threads if framework.startswith("torch") else 0
            run = run_worker(framework, args.data_dir, model, batch, epochs, n_train, threads,
                             unroll=args.unroll, compute_dtype=args.compute_dtype)
            runs[model, batch, framework].append(run)
            rates = run.get("samples_per_second")
            print(f"{model} {framework} batch {batch}: " + (
                f"{statistics.median(rates[1:] or rates):,.0f} samples/s" if rates
                else run.get("missing") or run.get("error")), file=sys.stderr, flush=True)
    report["training"] = [combine(v) for v in runs.values()]
    add_ratios(report["training"])
    if starts and args.training:
        with tempfile.TemporaryDirectory() as cache:
            cold = [run_worker("flaxdigits", args.data_dir, "mlp", 32, 0)["first_step_seconds"]
                    for _ in range(starts)]
            run_worker("flaxdigits", args.data_dir, "mlp", 32, 0, cache=cache)  # fills it
            cached = [run_worker("flaxdigits", args.data_dir, "mlp", 32, 0, cache=cache)
                      ["first_step_seconds"] for _ in range(starts)]
        report["startup"] = {"cold": cold, "compilation cache (as the CLI)": cached}
    if args.ensembles:
        report["ensembles"] = ensemble_rows(args.data_dir, args.ensembles, args.batch_sizes,
                                            epochs, n_train, args.repeats, args.unroll,
                                            args.compute_dtype)
    if args.time_to:
        report["time_to_accuracy"] = [
            row for framework in TIME_TO if framework == "flaxdigits" or framework in args.peers
            for row in time_to_accuracy(args.data_dir, args.recipe, args.time_to,
                                        args.time_to_seeds, args.n_train, args.compute_dtype,
                                        framework, args.torch_threads)]
    if args.inference:
        if args.checkpoints:
            trained = {Path(p).stem: Classifier.load(p) for p in args.checkpoints}
            report["inference"] = inference(data, trained, reps, score=True)
        else:
            report["inference"] = inference(data, {m: untrained(m) for m in models}, reps,
                                            score=False)
    report["machine"]["loadavg_end"] = os.getloadavg()

    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)
    return report


if __name__ == "__main__":
    main()
