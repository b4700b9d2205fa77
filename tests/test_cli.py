import json
import os
import signal
import subprocess
import sys
import time

import pytest

from flaxdigits.checkpoints import load_result
from flaxdigits.cli import main

def _cli(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "flaxdigits.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_train_json_then_evaluate_json(mnist_dir, tmp_path):
    out = tmp_path / "m.ckpt"
    r = _cli("train", "--epochs", "1", "--hidden", "32", "--compute-dtype", "bfloat16",
             "--data-dir", mnist_dir, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # exactly one JSON object on stdout
    assert set(summary) >= {"test_accuracy", "test_loss", "epochs", "train_seconds", "history",
                            "checkpoint"}
    assert summary["epochs"] == 1 and summary["checkpoint"] == str(out)
    assert summary["config"]["model"]["hidden"] == [32]
    assert summary["config"]["compute_dtype"] == "bfloat16"
    assert summary["test_accuracy"] > 0.9
    assert (tmp_path / "m.best.ckpt").exists()

    r = _cli("evaluate", out, "--json", env_extra={"FLAXDIGITS_DATA_DIR": str(mnist_dir)})
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    assert scores == {"accuracy": summary["test_accuracy"], "loss": pytest.approx(
        summary["test_loss"], rel=1e-6), "n": 10_000}


def test_softmax_regression_without_scaling_in_process(mnist_dir, capsys):
    assert main(["train", "--hidden", "--no-scale", "--epochs", "1", "--data-dir",
                 str(mnist_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = summary["config"]["model"]
    assert (model["kind"], model["hidden"], model["scale"]) == ("mlp", [], False)
    assert 0.75 < summary["test_accuracy"] < 0.95


def test_resume_only_changes_epochs(mnist_dir, tmp_path, capsys):
    ckpt = tmp_path / "m.ckpt"
    assert main(["train", "--epochs", "1", "--data-dir", str(mnist_dir), "--out", str(ckpt),
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt), "--lr", "0.1", "--data-dir",
                 str(mnist_dir)]) == 1
    assert "only --epochs may change, not --lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(ckpt), "--model", "cnn", "--no-scale"]) == 1
    assert "not --model --scale" in capsys.readouterr().err
    assert main(["train", "--resume", str(ckpt), "--epochs", "2", "--data-dir",
                 str(mnist_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    assert len(load_result(ckpt).history) == 2
    assert main(["train", "--resume", str(ckpt), "--data-dir", str(mnist_dir)]) == 1
    assert "nothing to train" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["train", "--data-dir", "/no/such/dir"], "does not exist"),
    (["train", "--source", "idx", "--epochs", "0", "--data-dir", "."], "epochs must be"),
    (["evaluate", "/no/such.ckpt"], "no checkpoint at"),
    (["train", "--resume", "/no/such.ckpt"], "no checkpoint at"),
])
def test_errors_are_one_line_and_nonzero(args, message):
    r = _cli(*args)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


def test_ctrl_c_stops_after_the_last_complete_epoch(mnist_dir, tmp_path):
    ckpt = tmp_path / "m.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "flaxdigits.cli", "train", "--epochs", "500",
                             "--data-dir", str(mnist_dir), "--out", str(ckpt)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "holds the last complete epoch" in err and "Traceback" not in err
    run = load_result(ckpt)
    assert 1 <= len(run.history) < 500
    assert int(run.optimizer.step[...]) == len(run.history) * (60_000 // 32)
