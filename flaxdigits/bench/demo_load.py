"""Load on the demo: many `gradio_client` clients at once, against the batched app and the
unbatched one (`--no-batch`) in the same run.

    python -m flaxdigits.bench.demo_load --model CKPT [--clients 50] [--uploads 5]
        [--data-dir DIR] [--rounds N] [--app NAME=COMMAND ...] [--json OUT.json]

Each app serves CKPT in its own process, started afresh for every round, each round in another
order. Every client connects first, then all of them upload their digits at once (MNIST test
digits as large black-on-white PNGs, as a user would upload them), one after another, timing
each prediction from request to answer. Every answer must be the served model's own answer for
that file, computed here: none mixed up, lost or failed. Besides p50/p95 over all predictions,
the table gives p95 without each client's first one (which meets the app cold and the other 49
at once) and the server's CPU time per prediction: latency here is ~50 / throughput.

`--app NAME=COMMAND` loads another app too, started as COMMAND --model CKPT --port N: for
instance the demo as an older commit shipped it, `git archive COMMIT | tar -x -C OLD` and
`--app "old=env -C OLD python -m flaxdigits.demo"` (run from OLD: `python -m` imports the
package of the current folder first). Needs the `demo` extra (gradio, which brings
gradio_client).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from flaxdigits.bench import median_known
from flaxdigits.data import load_idx
from flaxdigits.errors import need
from flaxdigits.inference import Classifier
from flaxdigits.preprocess import to_mnist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    """A demo process answering at `url`."""

    url: str
    pid: int


@contextmanager
def served(model: str | os.PathLike, batch: bool = True, timeout: float = 120,
           command: list[str] | None = None) -> Iterator[Served]:
    """The demo serving `model` in its own process (batched or not), once it answers.
    `command` starts it (default: python -m flaxdigits.demo)."""
    port = _free_port()
    command = command or [sys.executable, "-m", "flaxdigits.demo"]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", FLAXDIGITS_CACHE_DIR=cache)
        proc = subprocess.Popen(
            [*command, "--model", str(Path(model).resolve()), "--port", str(port)]
            + ([] if batch else ["--no-batch"]), env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        url, deadline = f"http://127.0.0.1:{port}/", time.time() + timeout
        try:
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"the demo did not start on {url}") from None
                    time.sleep(0.5)
            yield Served(url, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@contextmanager
def serve(model: str | os.PathLike, batch: bool = True, timeout: float = 120,
          command: list[str] | None = None) -> Iterator[str]:
    """`served`, giving just the URL."""
    with served(model, batch, timeout, command) as app:
        yield app.url


def digit_png(path: Path, image: np.ndarray, scale: int = 10) -> Path:
    """An MNIST digit as a large black-on-white PNG at `path`, as a user would upload it."""
    Image.fromarray(255 - np.kron(image, np.ones((scale, scale), np.uint8))).save(path)
    return path


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` so far (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _p95(latencies: list[float]) -> float:
    return sorted(latencies)[int(0.95 * (len(latencies) - 1))]


def load(url: str, model_name: str, files: list[tuple[Path, int]], clients: int,
         uploads: int, server_pid: int | None = None) -> dict[str, Any]:
    """`clients` clients at once, `uploads` predictions each -> latencies and failures (and the
    server's CPU time per request, given its process id)."""
    gradio_client = need("gradio_client", "demo", "the demo's load test")
    # The server is plain HTTP on 127.0.0.1. With ssl_verify on, every request of every client
    # (3 a prediction: upload, join, stream) built a TLS context from certifi's CA bundle,
    # ~26 ms of CPU each: the load generator used 5x the server's CPU on the same 2 cores.
    connected = [gradio_client.Client(url, verbose=False, ssl_verify=False)
                 for _ in range(clients)]

    def one_client(k: int) -> list[tuple[float, str | None]]:
        out = []
        for j in range(uploads):
            path, want = files[(k * uploads + j) % len(files)]
            t0 = time.perf_counter()
            try:
                label, _, status = connected[k].predict(
                    model_name, gradio_client.handle_file(str(path)), api_name="/predict_upload")
                problem = None if label.get("label") == str(want) else f"wrong: {status}"
            except Exception as e:  # a dropped or failed request counts, it does not stop us
                problem = f"failed: {type(e).__name__}: {e}"
            out.append((time.perf_counter() - t0, problem))
        return out

    server0 = _cpu_seconds(server_pid) if server_pid else None
    own0, t0 = _own_cpu_seconds(), time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            per_client = list(pool.map(one_client, range(clients)))
        wall = time.perf_counter() - t0
        own = _own_cpu_seconds() - own0
        server1 = _cpu_seconds(server_pid) if server_pid else None
    finally:
        for client in connected:  # each holds a heartbeat stream open, with its own thread
            client.close()
    results = [r for rs in per_client for r in rs]
    latencies = sorted(t for t, _ in results)
    # Each client's first upload meets the app cold and all the other clients at once.
    later = [t for rs in per_client for t, _ in rs[1:]]
    problems = [p for _, p in results if p]
    n = len(results)
    return {"requests": n, "wrong_or_failed": len(problems),
            "problems": problems[:5], "wall_seconds": wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * _p95(latencies),
            "p95_after_first_ms": 1000 * _p95(later) if later else None,
            "max_ms": 1000 * latencies[-1],
            "server_cpu_ms_per_request": (1000 * (server1 - server0) / n
                                          if server0 is not None and server1 is not None
                                          else None),
            "client_cpu_ms_per_request": 1000 * own / n}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One app over several rounds: counts summed, timings the median of the rounds'."""
    out: dict[str, Any] = {"rounds": len(runs),
                           "requests": sum(r["requests"] for r in runs),
                           "wrong_or_failed": sum(r["wrong_or_failed"] for r in runs),
                           "problems": [p for r in runs for p in r["problems"]][:5]}
    for key in runs[0]:
        if key not in out:
            out[key] = median_known([r[key] for r in runs])
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _cpu(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _print_table(results: dict[str, dict[str, Any]]) -> None:
    print("| app | requests | wrong or failed | p50 ms | p95 ms | p95 after 1st ms | max ms "
          "| wall s | server CPU ms/request |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['requests']} | {r['wrong_or_failed']} | {_ms(r['p50_ms'])} | "
              f"{_ms(r['p95_ms'])} | {_ms(r['p95_after_first_ms'])} | {_ms(r['max_ms'])} | "
              f"{r['wall_seconds']:.1f} | {_cpu(r['server_cpu_ms_per_request'])} |")


def _app(spec: str) -> tuple[str, list[str]]:
    name, sep, command = spec.partition("=")
    if not sep or not name or not command.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=COMMAND, got {spec!r}")
    return name, shlex.split(command)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Load every app in turn, each round; print Markdown tables and the p95 ratios (and write
    JSON if asked)."""
    ap = argparse.ArgumentParser(prog="python -m flaxdigits.bench.demo_load",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the checkpoint every app serves")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--uploads", type=int, default=5, help="predictions per client")
    ap.add_argument("--data-dir", default=os.environ.get("FLAXDIGITS_DATA_DIR"),
                    help="folder with the official IDX files (default: $FLAXDIGITS_DATA_DIR)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="serve and load every app this many times, in turn (the machine's "
                         "load drifts: compare apps within a round)")
    ap.add_argument("--app", type=_app, action="append", default=[], metavar="NAME=COMMAND",
                    help="another app to load in each round, started as COMMAND --model CKPT "
                         "--port N (repeatable)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    if not args.data_dir:
        ap.error("the load test uploads MNIST test digits: pass --data-dir DIR or set "
                 "FLAXDIGITS_DATA_DIR")
    gradio = need("gradio", "demo", "the demo's load test")
    data = load_idx(args.data_dir)
    model = Classifier.load(args.model)
    apps: list[tuple[str, bool, list[str] | None]] = [(name, True, command)
                                                      for name, command in args.app]
    apps += [("unbatched", False, None), ("batched", True, None)]
    names = [name for name, _, _ in apps]
    rounds: list[dict[str, dict[str, Any]]] = []
    print(f"{args.clients} clients x {args.uploads} uploads, at once, on {os.cpu_count()} CPUs, "
          f"gradio {gradio.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = [digit_png(Path(tmp) / f"{i}.png", x) for i, x in enumerate(data.test_images[:20])]
        files = [(p, int(model.predict(to_mnist(p)[None])[0].argmax())) for p in paths]
        for k in range(args.rounds):
            results: dict[str, dict[str, Any]] = {}
            # Each round starts with another app: none always follows the same one.
            order = apps[k % len(apps):] + apps[:k % len(apps)]
            for name, batch, command in order:
                with served(args.model, batch, command=command) as app:
                    results[name] = load(app.url, Path(args.model).name, files, args.clients,
                                         args.uploads, server_pid=app.pid)
            rounds.append(results)
            print(f"\nround {k + 1} of {args.rounds}, in turn: "
                  f"{', '.join(name for name, _, _ in order)}\n")
            _print_table({name: results[name] for name in names})
    report: dict[str, Any] = {
        "clients": args.clients, "uploads": args.uploads, "cpus": os.cpu_count(),
        "gradio": gradio.__version__, "rounds": rounds,
        "apps": {name: _summary([r[name] for r in rounds]) for name in names},
        # Per round, then the median: apps of one round met the same machine load.
        "p95_over_batched": {name: median_known([r[name]["p95_ms"] / r["batched"]["p95_ms"]
                                            for r in rounds])
                             for name in names if name != "batched"},
    }
    if len(rounds) > 1:
        print(f"\nmedian of {len(rounds)} rounds\n")
        _print_table(report["apps"])
    print()
    for name, ratio in report["p95_over_batched"].items():
        each = ", ".join(f"{r[name]['p95_ms'] / r['batched']['p95_ms']:.2f}" for r in rounds)
        print(f"p95 {name} / batched: {ratio:.2f}x" + (f" (rounds: {each})" if len(rounds) > 1
                                                        else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
