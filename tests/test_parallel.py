"""Data-parallel training on several devices and several processes, on CPU.

JAX fixes its device count when the backend starts, so each multi-device run is a subprocess
of its own (JAX_NUM_CPU_DEVICES=4, or two processes joined by `jax.distributed` over gloo):
nothing of it leaks into the other tests' one-device process.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from flaxdigits.config import TrainConfig
from flaxdigits.errors import InputError
from flaxdigits.parallel import data_mesh, split_address
from flaxdigits.training import train

HERE = Path(__file__).parent
TOLERANCE = 0.0005  # 0.05 point of test accuracy (5 of the 10,000 test images)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    return {**env, "FLAXDIGITS_NO_COMPILE_CACHE": "1", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_cli(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "flaxdigits.cli", "train", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), **popen)


@pytest.fixture(scope="module")
def one_device(mnist):
    """One epoch of the seed recipe on this process's one device: the reference."""
    return train(TrainConfig(epochs=1), mnist)


def test_four_cpu_devices_match_one_device(mnist_dir, one_device, tmp_path):
    params = tmp_path / "params.npz"
    r = subprocess.run([sys.executable, str(HERE / "_four_devices.py"), str(mnist_dir), params],
                       capture_output=True, text=True, timeout=600,
                       env=_env(JAX_NUM_CPU_DEVICES="4"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert out["batch_sharding"] == "P(None, 'data')"
    assert out["same_batches"]  # the same shuffles and augmentation, split over the devices
    assert abs(out["sharded"] - one_device.test_accuracy) <= TOLERANCE, out
    with np.load(params) as saved:
        diff = max(float(np.abs(saved[f"arr_{i}"] - np.asarray(a)).max())
                   for i, a in enumerate(jax.tree.leaves(one_device.params)))
    assert 0 < diff < 1e-2  # gradients summed in another order: close, not bit for bit
    assert out["sharded"] > 0.95
    assert "not divisible by the 4 devices" in out["errors"][0]
    assert "8 devices asked for, but 4 visible" in out["errors"][1]


@pytest.mark.slow
def test_two_processes_agree_and_match_one_process(mnist_dir, one_device, tmp_path):
    port = _free_port()
    common = ["--epochs", 1, "--data-dir", mnist_dir, "--coordinator", f"127.0.0.1:{port}",
              "--num-processes", 2, "--json", "--init-timeout", 60]
    procs = [_train_cli(*common, "--process-id", i, "--out", tmp_path / f"p{i}.ckpt")
             for i in (0, 1)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    summary = json.loads(outs[0][0])  # process 0 prints the one JSON object ...
    assert outs[1][0] == ""  # ... and process 1 none
    assert summary["processes"] == 2 and summary["devices"] == 2
    line = next(x for x in outs[1][1].splitlines() if x.startswith("process 1:"))
    assert f"test accuracy {summary['test_accuracy']!r}," in line  # the processes agree
    assert abs(summary["test_accuracy"] - one_device.test_accuracy) <= TOLERANCE
    assert (tmp_path / "p0.ckpt").exists() and not (tmp_path / "p1.ckpt").exists()


def test_an_unreachable_coordinator_is_one_line_within_the_timeout():
    start = time.monotonic()
    r = _train_cli("--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", 2,
                   "--process-id", 1, "--init-timeout", 2, "--data-dir", ".")
    _, err = r.communicate(timeout=120)
    assert r.returncode == 1
    assert err.strip().splitlines() == [
        err.strip()] and "cannot reach the coordinator at 127.0.0.1:" in err
    assert time.monotonic() - start < 60


def test_missing_peers_are_one_line_not_a_hang_or_an_abort():
    r = _train_cli("--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", 2,
                   "--process-id", 0, "--init-timeout", 2, "--data-dir", ".")
    _, err = r.communicate(timeout=120)
    assert r.returncode == 1, err
    assert len(err.strip().splitlines()) == 1 and "did not all join" in err


@pytest.mark.parametrize("address", ["nohost", "host:", "host:99999", ":80"])
def test_bad_coordinator_addresses(address):
    with pytest.raises(InputError, match="HOST:PORT"):
        split_address(address)


def test_more_devices_than_visible_is_refused():
    with pytest.raises(InputError, match="2 devices asked for, but 1 visible.*JAX_NUM_CPU"):
        data_mesh(2)
    assert data_mesh(1) is None and data_mesh() is None  # one device: the plain program
