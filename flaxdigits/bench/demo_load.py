"""Load on the demo: many `gradio_client` clients at once, against the batched app and the
unbatched one (`--no-batch`) in the same run.

    python -m flaxdigits.bench.demo_load --model CKPT [--clients 50] [--uploads 5]
        [--data-dir DIR] [--json OUT.json]

Each app serves CKPT in its own process. Every client connects first, then all of them upload
their digits at once (MNIST test digits as large black-on-white PNGs, as a user would upload
them), one after another, timing each prediction from request to answer. Every answer must be
the served model's own answer for that file, computed here: none mixed up, lost or failed.
Needs the `demo` extra (gradio, whose package brings gradio_client).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from flaxdigits.data import load_idx
from flaxdigits.errors import need
from flaxdigits.inference import Classifier
from flaxdigits.preprocess import to_mnist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model: str | os.PathLike, batch: bool = True, timeout: float = 120,
          command: list[str] | None = None) -> Iterator[str]:
    """The demo serving `model` in its own process (batched or not) -> its URL, once it
    answers. `command` starts it (default: python -m flaxdigits.demo)."""
    port = _free_port()
    command = command or [sys.executable, "-m", "flaxdigits.demo"]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", FLAXDIGITS_CACHE_DIR=cache)
        proc = subprocess.Popen(
            [*command, "--model", str(model), "--port", str(port)]
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
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def digit_png(path: Path, image: np.ndarray, scale: int = 10) -> Path:
    """An MNIST digit as a large black-on-white PNG at `path`, as a user would upload it."""
    Image.fromarray(255 - np.kron(image, np.ones((scale, scale), np.uint8))).save(path)
    return path


def load(url: str, model_name: str, files: list[tuple[Path, int]], clients: int,
         uploads: int) -> dict[str, Any]:
    """`clients` clients at once, `uploads` predictions each -> latencies and failures."""
    gradio_client = need("gradio_client", "demo", "the demo's load test")
    connected = [gradio_client.Client(url, verbose=False) for _ in range(clients)]

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

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(one_client, range(clients)) for r in rs]
    wall = time.perf_counter() - t0
    latencies = sorted(t for t, _ in results)
    problems = [p for _, p in results if p]
    return {"requests": len(results), "wrong_or_failed": len(problems),
            "problems": problems[:5], "wall_seconds": wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
            "max_ms": 1000 * latencies[-1]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Load both apps in turn; print a Markdown table (and write JSON if asked)."""
    ap = argparse.ArgumentParser(prog="python -m flaxdigits.bench.demo_load",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the checkpoint both apps serve")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--uploads", type=int, default=5, help="predictions per client")
    ap.add_argument("--data-dir", default=os.environ.get("FLAXDIGITS_DATA_DIR"),
                    help="folder with the official IDX files (default: $FLAXDIGITS_DATA_DIR)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    if not args.data_dir:
        ap.error("the load test uploads MNIST test digits: pass --data-dir DIR or set "
                 "FLAXDIGITS_DATA_DIR")
    need("gradio", "demo", "the demo's load test")
    data = load_idx(args.data_dir)
    model = Classifier.load(args.model)
    report: dict[str, Any] = {"clients": args.clients, "uploads": args.uploads, "apps": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = [digit_png(Path(tmp) / f"{i}.png", x) for i, x in enumerate(data.test_images[:20])]
        files = [(p, int(model.predict(to_mnist(p)[None])[0].argmax())) for p in paths]
        for name, batch in (("unbatched", False), ("batched", True)):
            with serve(args.model, batch) as url:
                report["apps"][name] = load(url, Path(args.model).name, files, args.clients,
                                            args.uploads)
    print(f"{args.clients} clients x {args.uploads} uploads, at once, on {os.cpu_count()} CPUs\n")
    print("| app | requests | wrong or failed | p50 ms | p95 ms | max ms | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in report["apps"].items():
        print(f"| {name} | {r['requests']} | {r['wrong_or_failed']} | {r['p50_ms']:,.0f} | "
              f"{r['p95_ms']:,.0f} | {r['max_ms']:,.0f} | {r['wall_seconds']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
