"""The `flaxdigits` command line: train, resume, evaluate, predict, export, demo, bench, report.

The training flags are generated from the config dataclasses (`flaxdigits.config`), so each
option, its default and its help are written once. Commands import JAX, TensorFlow or gradio
inside their functions, for start-up cost: `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from flaxdigits.config import TrainConfig, cli_options
from flaxdigits.errors import FlaxdigitsError, InputError
from flaxdigits.recipes import RECIPES, resolve


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with the four official MNIST IDX files "
                   "(default: $FLAXDIGITS_DATA_DIR)")
    p.add_argument("--source", choices=["auto", "idx", "tfds"], default="auto",
                   help="read the IDX files directly, or go through TFDS (default: idx when a "
                   "data folder is given, else tfds)")
    p.add_argument("--tfds-dir", help="where TFDS keeps prepared data (default: TFDS's own)")


def _shown(value: Any) -> str:
    """A config default as the help text shows it."""
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    if dataclasses.is_dataclass(value):  # Augment
        return "on" if value.enabled else "off"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _flag(f: dataclasses.Field) -> str:
    """The command-line flag of config field `f` (`kind` is `--model`)."""
    return "--" + (f.metadata["flag"] or f.name).replace("_", "-")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per config option (`flaxdigits.config`): its type, choices, help and default.

    Every flag defaults to None, so that only the flags given override a recipe.
    """
    defaults = TrainConfig()
    for f, cls in cli_options():
        flag = _flag(f)
        default = getattr(defaults.model if cls is not TrainConfig else defaults, f.name)
        kw: dict[str, Any] = {"dest": f.name, "default": None,
                              "help": f"{f.metadata['help']} (default: {_shown(default)})"}
        if isinstance(default, (bool, tuple)) or dataclasses.is_dataclass(default):
            if isinstance(default, tuple):
                kw.update(type=int, nargs="*", metavar=f.metadata["metavar"])
            else:
                kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(type=type(default), choices=f.metadata["choices"])
            if f.metadata["metavar"]:
                kw["metavar"] = f.metadata["metavar"]
        p.add_argument(flag, **kw)


def _parallel_args(p: argparse.ArgumentParser) -> None:
    """Where training runs: devices and processes (not part of the recipe, so not in the
    config or the checkpoint; a run gives the same result, up to float rounding, on any)."""
    p.add_argument("--devices", type=int, metavar="N", help="split every batch over N devices "
                   "(default: all visible, across processes; on CPU, JAX_NUM_CPU_DEVICES=N "
                   "makes N)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                   help="multi-process training: process 0's address, which every process "
                   "gives (default: $JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, metavar="P", help="processes in the run")
    p.add_argument("--process-id", type=int, metavar="I", help="this process, 0..P-1; "
                   "process 0 writes the checkpoint and prints the results")
    p.add_argument("--distributed", action="store_true", help="join a multi-process run "
                   "that JAX detects by itself (Slurm, Open MPI, Cloud TPU pod slices)")
    p.add_argument("--init-timeout", type=int, default=120, metavar="S", help="seconds for the "
                   "processes to find each other before giving up (default: 120)")


def parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    ap = argparse.ArgumentParser(prog="flaxdigits", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on MNIST (or resume one)")
    t.add_argument("--recipe", choices=list(RECIPES), help="start from a named recipe (see "
                   "README); the flags given after it override its values")
    add_config_flags(t)
    t.add_argument("--out", help="checkpoint file, rewritten after every epoch; the best epoch "
                   "by test accuracy is also kept as NAME.best.ckpt")
    t.add_argument("--resume", metavar="CKPT", help="continue the run saved in CKPT (up to "
                   "--epochs); writes back to CKPT unless --out is given")
    _parallel_args(t)
    _data_args(t)
    t.add_argument("--json", action="store_true", help="print one JSON object at the end")

    e = sub.add_parser("evaluate", help="score a saved model on the 10,000 test images")
    e.add_argument("model", metavar="MODEL", help="checkpoint or exported .tflite file")
    _data_args(e)
    e.add_argument("--json", action="store_true", help='print {"accuracy", "loss", "n"}')
    p = sub.add_parser("predict", help="classify image files of handwritten digits")
    p.add_argument("model", metavar="MODEL", help="checkpoint or exported .tflite file")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="PNG/JPEG files, one digit each, "
                   "any size, dark on light or light on dark")
    p.add_argument("--json", action="store_true",
                   help='print [{"file", "digit", "probabilities"}, ...]')

    x = sub.add_parser("export", help="export a checkpoint to .tflite for LiteRT (phones, "
                       "microcontrollers)")
    x.add_argument("model", metavar="MODEL", help="checkpoint file")
    x.add_argument("-o", "--out", help="output file (default: MODEL's name with .tflite, "
                   "or -QUANTIZE.tflite when quantized)")
    x.add_argument("--quantize", choices=["none", "float16", "dynamic", "int8"], default="none",
                   help="none: float32; float16: float16 weights; dynamic: int8 weights; "
                   "int8: full integer with int8 input/output, calibrated on training images "
                   "(needs the data)")
    x.add_argument("--batch", type=int, default=1, help="fixed batch size of the exported "
                   "graph (default: 1)")
    _data_args(x)
    x.add_argument("--json", action="store_true", help="print the export summary as JSON")

    d = sub.add_parser("demo", help="serve the Gradio sketchpad demo on 127.0.0.1")
    d.add_argument("--model", action="append", metavar="PATH",
                   help="checkpoint to offer (repeatable; default: every models/*.ckpt)")
    d.add_argument("--port", type=int, default=7860)
    d.add_argument("--no-batch", dest="batch", action="store_false",
                   help="answer every prediction alone, not in batches (to compare under load)")

    # Listed for --help only: main() hands `bench` and its arguments to flaxdigits.bench.runner.
    sub.add_parser("bench", help="training throughput beside Keras and PyTorch, start-up and "
                   "inference latency (see flaxdigits bench --help)")

    r = sub.add_parser("report", help="rerun the seed tutorial's study: ablation table over "
                       "seeds and figures, as report.md + PNGs")
    r.add_argument("--out", default="report", help="output folder (default: report)")
    r.add_argument("--seeds", type=int, default=3, help="seeds per row (default: 3)")
    r.add_argument("--quick", action="store_true",
                   help="a smoke run: 1 seed, 1 epoch, 10,000 training / 2,000 test images")
    _data_args(r)
    return ap


def _load(args):
    from flaxdigits.data import load_mnist

    return load_mnist(args.source, args.data_dir, args.tfds_dir)


def _given(args) -> dict[str, Any]:
    """The config flags given on the command line, by field name."""
    return {f.name: getattr(args, f.name) for f, _ in cli_options()
            if getattr(args, f.name) is not None}


def _start_processes(args) -> bool:
    """Join a multi-process run if the flags (or $JAX_COORDINATOR_ADDRESS) ask for one."""
    if args.coordinator is None and args.num_processes is None and args.process_id is None \
            and not args.distributed:
        return False
    from flaxdigits.parallel import INIT_GRACE, initialize

    if not args.distributed and None in (args.coordinator, args.num_processes, args.process_id):
        raise InputError("multi-process training needs --coordinator HOST:PORT, "
                         "--num-processes P and --process-id I (or --distributed on Slurm, "
                         "Open MPI or a TPU pod)")
    # JAX's client aborts the process with a stack trace when its registration times out
    # (peers that never come): say it in one line just before that.
    watchdog = threading.Timer(args.init_timeout + INIT_GRACE - 1, _give_up, (args,))
    watchdog.daemon = True
    watchdog.start()
    try:
        initialize(args.coordinator, args.num_processes, args.process_id, args.init_timeout)
    finally:
        watchdog.cancel()
    return True


def _give_up(args) -> None:
    print(f"flaxdigits train: error: the {args.num_processes or ''} processes did not all join "
          f"{args.coordinator or 'the run'} within {args.init_timeout} s (is every process "
          f"started, with the same --coordinator?)", file=sys.stderr,
          flush=True)
    os._exit(1)


def cmd_train(args) -> dict[str, Any] | None:
    """Train (or resume) from the command line; returns the JSON summary (None in processes
    other than 0 of a multi-process run, which report on stderr)."""
    from flaxdigits.checkpoint_file import best_path
    from flaxdigits.checkpoints import load_result, save_result

    if args.devices is not None and args.devices < 1:
        raise InputError(f"--devices must be at least 1, got {args.devices}")
    if args.resume:
        clash = ["--recipe"] * bool(args.recipe) + [
            _flag(f) for f, _ in cli_options()
            if f.name not in ("epochs", "ensemble") and f.name in _given(args)]
        if clash:
            raise InputError(f"--resume continues the saved recipe; only --epochs may change, "
                             f"not {' '.join(clash)}")
    else:
        config = resolve(args.recipe, **_given(args))
    # Before anything computes with JAX (loading a checkpoint does): the distributed runtime
    # must be up before the backend starts.
    processes = _start_processes(args)
    import jax

    from flaxdigits import parallel
    from flaxdigits.training import describe_members, train

    resume, out = None, args.out
    if args.resume:
        resume = load_result(args.resume)
        config = resume.config
        if args.ensemble is not None and args.ensemble != config.ensemble:
            raise InputError(f"{args.resume} holds {describe_members(config.ensemble)}; "
                             f"--resume continues it as it is, "
                             f"so --ensemble {args.ensemble} cannot apply (train afresh)")
        if args.epochs is not None:
            config = dataclasses.replace(config, epochs=args.epochs)
        if len(resume.history) >= config.epochs:
            raise InputError(f"nothing to train: {args.resume} already has "
                             f"{len(resume.history)} epochs (raise --epochs)")
        out = args.out or args.resume
    primary = parallel.is_primary()
    out = out if primary else None  # process 0 alone writes the checkpoint
    data = _load(args)
    best = max((h["test_accuracy"] for h in resume.history), default=-1.0) if resume else -1.0

    def on_epoch(run) -> None:
        nonlocal best
        progress.epoch(run.history[-1])
        if out:
            save_result(out, run)
            if run.test_accuracy > best:
                best = run.test_accuracy
                save_result(best_path(out), run)
        if stop:
            raise KeyboardInterrupt

    with Progress(config.epochs, enabled=not args.json and sys.stderr.isatty()) as progress, \
            _stop_after_epoch() as stop:
        try:
            result = train(config, data, on_epoch=on_epoch, resume=resume,
                           devices=args.devices)
        except KeyboardInterrupt:
            if out:
                print(f"interrupted: {out} holds the last complete epoch; continue with "
                      f"flaxdigits train --resume {out}", file=sys.stderr)
            raise
    summary = {
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "epochs": len(result.history),
        "train_seconds": result.train_seconds,
        "compile_seconds": result.compile_seconds,
        "config": dataclasses.asdict(config),
        "data_source": data.source,
        "devices": parallel.mesh_size(parallel.data_mesh(args.devices)),
        "processes": jax.process_count() if processes else 1,
        "history": result.history,
        "checkpoint": str(out) if out else None,
    }
    if config.ensemble > 1:
        summary["members"] = result.members
    if not primary:
        print(f"process {args.process_id if args.process_id is not None else '?'}: test "
              f"accuracy {result.test_accuracy!r}, test loss {result.test_loss!r} (process 0 "
              f"writes the checkpoint and the results)", file=sys.stderr)
        return None
    if not args.json:
        for h in result.history:
            print(f"epoch {h['epoch']:3d}  train loss {h['train_loss']:.4f} acc "
                  f"{h['train_accuracy']:.4f}  test loss {h['test_loss']:.4f} acc "
                  f"{h['test_accuracy']:.4f}  {h['samples_per_second']:,.0f} samples/s")
        for m in result.members:
            print(f"member seed {m['seed']}: test accuracy {m['test_accuracy']:.2%}, loss "
                  f"{m['test_loss']:.4f}")
        what = f"ensemble of {config.ensemble}: " if config.ensemble > 1 else ""
        print(f"{what}test accuracy {result.test_accuracy:.2%} on {len(data.test_labels):,} "
              f"images; trained in {result.train_seconds:.1f} s (+{result.compile_seconds:.1f} s "
              f"compile)")
        if out:
            print(f"checkpoint: {out}")
    return summary


@contextlib.contextmanager
def _stop_after_epoch():
    """The first Ctrl-C asks training to stop once the running epoch is saved; a second one
    stops at once.

    A flag rather than Python's KeyboardInterrupt: that exception is swallowed ("Exception
    ignored") when the signal lands while a destructor or callback runs, and training went on.
    """
    requested: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(True)
        print("\nstopping after this epoch (Ctrl-C again to stop now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_evaluate(args) -> dict[str, Any]:
    """Score a saved model (checkpoint or .tflite) on all test images."""
    from flaxdigits.litert import load_model

    model = load_model(args.model)
    data = _load(args)
    scores = model.evaluate(data.test_images, data.test_labels)
    if not args.json:
        print(f"{args.model}: test accuracy {scores['accuracy']:.2%}, loss {scores['loss']:.4f} "
              f"on {scores['n']:,} images")
    return scores


class Progress:
    """A rich progress bar over epochs on a terminal; does nothing when disabled."""

    def __init__(self, epochs: int, enabled: bool):
        self.epochs, self.enabled, self._bar = epochs, enabled, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("training", total=self.epochs,
                                            status="compiling the epoch...")
        return self

    def epoch(self, entry: dict[str, float]) -> None:
        """Advance by one finished epoch."""
        if self._bar is not None:
            self._bar.update(self._task, completed=entry["epoch"], status=(
                f"loss {entry['train_loss']:.4f}  test acc {entry['test_accuracy']:.2%}  "
                f"{entry['samples_per_second']:,.0f} samples/s"))

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()


def cmd_predict(args) -> list[dict[str, Any]]:
    """Classify image files with a saved model, preprocessed the MNIST way."""
    import numpy as np

    from flaxdigits.litert import load_model
    from flaxdigits.preprocess import to_mnist

    model = load_model(args.model)
    images = []
    for path in args.images:
        try:
            images.append(to_mnist(path))
        except InputError as e:
            raise InputError(f"{path}: {e}" if path not in str(e) else str(e)) from None
    probs = model.predict(np.stack(images))
    out = [{"file": path, "digit": int(p.argmax()), "probabilities": [round(float(x), 6)
                                                                       for x in p]}
           for path, p in zip(args.images, probs)]
    if not args.json:
        for o in out:
            print(f"{o['file']}: {o['digit']} ({o['probabilities'][o['digit']]:.1%})")
    return out


def cmd_export(args) -> dict[str, Any]:
    """Export a checkpoint to .tflite."""
    from flaxdigits.export import calibration_images, export_tflite
    from flaxdigits.inference import Classifier
    from flaxdigits.litert import is_tflite

    if is_tflite(args.model):
        raise InputError(f"{args.model} is already a .tflite file: export takes a flaxdigits "
                         f"checkpoint (.ckpt)")
    if args.batch < 1:
        raise InputError(f"--batch must be at least 1, got {args.batch}")
    model = Classifier.load(args.model)
    suffix = "" if args.quantize == "none" else f"-{args.quantize}"
    out = args.out or Path(args.model).with_name(f"{Path(args.model).stem}{suffix}.tflite")
    calibration = None
    if args.quantize == "int8":
        calibration = calibration_images(_load(args).train_images)
    summary = export_tflite(model, out, args.quantize, args.batch, calibration)
    if not args.json:
        print(f"wrote {summary['path']} ({summary['bytes']:,} bytes, {args.quantize}, batch "
              f"{args.batch}) in {summary['seconds']:.1f} s")
    return summary


def cmd_demo(args) -> None:
    """Serve the Gradio demo (flaxdigits.demo)."""
    from flaxdigits.demo import gradio, launch

    gradio()  # one line naming the `demo` extra when gradio is missing
    print(f"serving on http://127.0.0.1:{args.port} (Ctrl-C stops)", file=sys.stderr)
    launch(args.model, args.port, batch=args.batch)


def cmd_report(args) -> dict[str, Any]:
    """Write the study's report folder."""
    from flaxdigits.report import write_report

    if args.seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {args.seeds}")
    data = _load(args)
    seeds, epochs = args.seeds, 5
    if args.quick:
        data, seeds, epochs = data.subset(10_000, 2_000), 1, 1

    def on_run(row, seed, result) -> None:
        print(f"{row.name}, seed {seed}: test accuracy {result.test_accuracy:.2%} "
              f"({result.train_seconds:.1f} s)", file=sys.stderr)

    command = "flaxdigits " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["report"] else ""
    path = write_report(args.out, data, seeds=seeds, epochs=epochs, command=command,
                        on_run=on_run)
    print(f"report written to {path}")
    return {"report": str(path)}


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "export": cmd_export, "demo": cmd_demo, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        try:
            from flaxdigits.bench import runner

            runner.main(argv[1:])
        except FlaxdigitsError as e:
            print(f"flaxdigits bench: error: {e}", file=sys.stderr)
            return 1
        return 0
    args = parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    try:
        with _stdout_to_stderr() if as_json else contextlib.nullcontext():
            if os.environ.get("FLAXDIGITS_NO_COMPILE_CACHE") is None:
                from flaxdigits.training import enable_compilation_cache

                enable_compilation_cache()
            out = COMMANDS[args.command](args)
    except FlaxdigitsError as e:
        print(f"flaxdigits {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flaxdigits {args.command}: interrupted", file=sys.stderr)
        return 130
    if as_json and out is not None:
        print(json.dumps(out))
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout meanwhile, by Python or native code, to stderr.

    With --json, stdout carries exactly one JSON object: TFDS announces its first preparation
    there, and libraries may print too.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
