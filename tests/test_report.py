import numpy as np
from PIL import Image

from flaxdigits import plots
from flaxdigits.cli import main
from flaxdigits.report import ABLATIONS, FIGURES


def test_report_quick_writes_every_file(mnist_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--quick", "--out", str(out), "--data-dir", str(mnist_dir)]) == 0
    md = (out / "report.md").read_text()
    for name in FIGURES:
        with Image.open(out / name) as im:
            im.load()  # decodes the whole PNG
            assert im.size[0] > 300 and im.size[1] > 200
        assert f"]({name})" in md
    for row in ABLATIONS:
        assert row.name in md
    assert (out / "report.json").stat().st_size > 0
    assert "seed 0" in capsys.readouterr().err


def test_confusion_matrix_counts():
    m = plots.confusion_matrix(np.array([0, 0, 1, 9]), np.array([0, 1, 1, 9]))
    assert m.sum() == 4 and m[0, 0] == 1 and m[0, 1] == 1 and m[1, 1] == 1 and m[9, 9] == 1


def test_prediction_grid_shows_mistakes(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    labels = np.arange(60) % 10
    probs = np.eye(10)[labels]
    probs[[5, 7]] = np.eye(10)[[3, 3]]  # two mistakes
    fig = plots.predictions(images, labels, probs, n=20, wrong=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 20 and sum("true" in t for t in titles) == 2
    plots.save(fig, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_report_rejects_zero_seeds(capsys):
    assert main(["report", "--seeds", "0", "--data-dir", "."]) == 1
    assert "--seeds" in capsys.readouterr().err
