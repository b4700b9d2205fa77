import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_throughput  # noqa: E402


def test_benchmark_smoke_run_writes_its_json(mnist_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    train_throughput.main(["--data-dir", str(mnist_dir), "--epochs", "2", "--starts", "1",
                           "--batch-sizes", "256", "--json", str(out)])
    report = json.loads(out.read_text())
    (row,) = report["runs"]
    assert row["model"] == "mlp" and row["loop"] == "scan" and row["batch_size"] == 256
    assert row["samples_per_second_min"] <= row["samples_per_second_median"] \
        <= row["samples_per_second_max"]
    assert len(report["first_step_seconds"]["cold"]) == 1
    assert {"processor", "backend", "jax", "loadavg"} <= set(report["machine"])
    assert "| mlp | scan | 256 |" in capsys.readouterr().out
