"""Draw a digit, see what the model thinks: a Gradio sketchpad over saved flaxdigits models.

    flaxdigits demo [--model PATH ...] [--port 7860]
    python demo/app.py [--model PATH ...] [--port 7860]   (from a checkout)

Needs gradio (the `demo` extra). Serves on 127.0.0.1 only, without a share link or analytics.
Drawings and uploads go through `flaxdigits.preprocess.to_mnist` (the MNIST recipe: crop, fit
20x20, centre of mass), and the 28x28 image the model sees is shown beside the prediction.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from flaxdigits.checkpoint_file import find_checkpoints
from flaxdigits.errors import FlaxdigitsError, need
from flaxdigits.inference import Classifier
from flaxdigits.ood import judge
from flaxdigits.paths import DEFAULT_MODEL_DIR, cache_dir
from flaxdigits.preprocess import BlankImage, to_mnist

PROMPT = "Draw a digit in the box (one digit, as large as you like), or upload an image."
CANVAS = 280
PREVIEW = 168  # the 28x28 input, shown 6x larger

# Selects the brush on page load and after each clear: Gradio's Sketchpad starts with no tool.
SELECT_BRUSH_JS = """
() => {
  const pick = () => {
    const b = document.querySelector('#sketch button[aria-label="Brush"]');
    if (b) b.click();
  };
  setTimeout(pick, 300);
  setTimeout(pick, 1500);
  document.addEventListener('click', (e) => {
    const t = e.target.closest('#sketch button');
    if (t && /clear/i.test(t.getAttribute('aria-label') || t.title || '')) setTimeout(pick, 200);
  }, true);
}
"""


class Models:
    """Checkpoints by name, each loaded on first use."""

    def __init__(self, paths: list[Path]):
        self.paths = {p.name: p for p in paths}
        self._loaded: dict[str, Classifier] = {}

    def get(self, name: str) -> Classifier:
        """The model called `name`, loading it if needed."""
        if name not in self._loaded:
            self._loaded[name] = Classifier.load(self.paths[name])
        return self._loaded[name]


def classify(models: Models, name: str, image) -> tuple[dict, str, str]:
    """(top-3 label dict, 28x28 preview as HTML, status message) for a sketch or a file."""
    return classify_many(models, [name], [image])[0]


def classify_many(models: Models, names: list[str], images: list) -> list[tuple[dict, str, str]]:
    """`classify` for many requests at once: one batched prediction per model."""
    answers: list[Any] = [({}, "", PROMPT)] * len(images)
    read: dict[str, list[tuple[int, np.ndarray]]] = {}  # model name -> (request, 28x28 input)
    for i, (name, image) in enumerate(zip(names, images)):
        if image is None:
            continue
        try:
            x = to_mnist(image)
        except BlankImage:
            continue
        except FlaxdigitsError as e:
            answers[i] = ({}, "", f"**Cannot read that image:** {e}")
            continue
        read.setdefault(name, []).append((i, x))
    for name, inputs in read.items():
        probs = models.get(name).predict(np.stack([x for _, x in inputs]))
        for (i, x), p in zip(inputs, probs):
            top = {str(d): float(p[d]) for d in np.argsort(-p)[:3]}
            answers[i] = (top, preview_html(x), verdict(p))
    return answers


def verdict(p: np.ndarray) -> str:
    """What the demo says of one prediction `p` [10]: the digit when the model is sure, two
    digits when it hesitates between them, and "not sure" otherwise (scribbles, letters); the
    thresholds are `ood.SURE` and `ood.PAIR`, calibrated on our out-of-distribution set."""
    kind, first, second = judge(p)
    if kind == "sure":
        return f"Looks like a **{first}** ({p[first]:.0%} sure)."
    if kind == "pair":
        return (f"A **{first}** or a **{second}**? ({p[first]:.0%} and {p[second]:.0%}: not sure "
                f"which.)")
    return (f"**Not sure** this is a digit (best guess {first}, {p[first]:.0%}). Draw one digit, "
            f"as you would on paper.")


def preview_html(x: np.ndarray) -> str:
    """The 28x28 input as an inline PNG, drawn large with visible pixels.

    Inline, because Gradio caches image outputs as files named by content, and concurrent
    requests with the same preview rewrote the file while it was being served.
    """
    buf = io.BytesIO()
    Image.fromarray(255 - x).save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<img alt="28x28 model input" src="data:image/png;base64,{data}" width="{PREVIEW}" '
            f'height="{PREVIEW}" style="image-rendering: pixelated; border: 1px solid #ccc">')


def gradio():
    """The gradio module, configured first (see `configure_environment`)."""
    configure_environment()
    return need("gradio", "demo", "the demo")


# Requests that wait in Gradio's queue together are answered by one call (see `build`).
MAX_BATCH = 16
# One batch at a time per event: requests that arrive meanwhile make the next batch larger.
# Batches side by side only take turns on the one interpreter lock, each with its own overhead.
BATCH_CONCURRENCY = 1
# Gradio's default ("auto") sends every waiting client its queue position after every job:
# ~45 messages per prediction with 50 clients waiting. Once a second is plenty for a person.
STATUS_UPDATE_SECONDS = 1.0
# Gradio's monitoring summary (a pandas table of up to 10,000 recorded events) is rebuilt after
# every event by default: 3 ms per event at 250 events, 10 ms at 10,000. We show no dashboard.
ANALYTICS_SUMMARY_EVERY = 1000


def build(models: Models, batch: bool = True):
    """The Gradio Blocks app; with `batch`, concurrent predictions are answered in batches of
    up to MAX_BATCH, each one call of the model."""
    gr = gradio()

    names = list(models.paths)
    with gr.Blocks(title="flaxdigits") as app:
        gr.Markdown("# flaxdigits: draw a digit\nA JAX/Flax model trained on MNIST reads "
                    "your handwriting. The prediction updates after every stroke.")
        with gr.Row():
            with gr.Column(scale=3):
                sketch = gr.Sketchpad(
                    label="Draw here", elem_id="sketch", type="numpy", image_mode="RGBA",
                    canvas_size=(CANVAS, CANVAS), fixed_canvas=True, layers=False,
                    brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"),
                )
                upload = gr.File(label="...or upload an image (PNG, JPEG, ...)",
                                 type="filepath", elem_id="upload")
            with gr.Column(scale=2):
                model = gr.Dropdown(names, value=names[0], label="Model", elem_id="model")
                status = gr.Markdown(PROMPT, elem_id="status")
                label = gr.Label(num_top_classes=3, label="Prediction", elem_id="label")
                gr.Markdown("What the model sees (28x28):")
                preview = gr.HTML(elem_id="preview")

        def predict(names, images):  # Gradio's batch form: a list per input and per output
            return [list(column) for column in zip(*classify_many(models, names, images))]

        def predict_one(name, image):
            return classify(models, name, image)

        handler = {"fn": predict, "batch": True, "max_batch_size": MAX_BATCH,
                   "concurrency_limit": BATCH_CONCURRENCY} if batch else {"fn": predict_one}
        outputs = [label, preview, status]
        sketch.change(inputs=[model, sketch], outputs=outputs, trigger_mode="always_last",
                      api_name="predict_sketch", **handler)
        # Clearing resets the outputs itself: a blank canvas's change event alone was sometimes
        # overtaken by the last stroke's prediction, leaving an old answer beside an empty box.
        sketch.clear(lambda: ({}, "", PROMPT), None, outputs, api_name=False)
        upload.upload(inputs=[model, upload], outputs=outputs, api_name="predict_upload",
                      **handler)
        upload.clear(lambda: ({}, "", PROMPT), None, outputs, api_name=False)
        model.change(predict_one, [model, sketch], outputs, api_name=False)
    return app


def local_theme():
    """Gradio's default look with system fonts: the stock theme fetches Google Fonts."""
    gr = gradio()
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def configure_environment() -> Path:
    """No analytics or update checks; Gradio's temporary files under our cache folder."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    tmp = cache_dir() / "gradio"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(tmp)
    return tmp


def launch(model_paths: list[str] | None = None, port: int = 7860, block: bool = True,
           batch: bool = True):
    """Serve the demo on 127.0.0.1:`port` over the given checkpoints (default: models/*.ckpt);
    `batch=False` answers every request alone (to compare under load)."""
    gradio()  # a missing gradio is reported before any model is loaded
    paths = [Path(p) for p in model_paths] if model_paths else find_checkpoints(DEFAULT_MODEL_DIR)
    if not paths:
        raise FlaxdigitsError(f"no models to serve: train one first (flaxdigits train --recipe "
                              f"drawn --out {DEFAULT_MODEL_DIR}/drawn.ckpt) or pass --model PATH")
    for p in paths:
        Classifier.load(p)  # fail now, with the checkpoint's own message, not at first stroke
    models = Models(paths)
    # One-time costs are paid now, not by the first visitors and everyone queued behind them:
    # compiling the default model for each batch size (~0.2 s a size), reading a first image,
    # and the first matplotlib backend switch, which Gradio makes around every call when
    # matplotlib is installed (~0.4 s, over 1 s on a busy machine). Other models load lazily.
    name = paths[0].name
    for n in range(1, (MAX_BATCH if batch else 1) + 1):
        models.get(name).predict(np.zeros((n, 28, 28), np.uint8))
    stroke = np.full((CANVAS, CANVAS, 4), 255, np.uint8)
    stroke[40:240, 130:150, :3] = 0
    classify(models, name, stroke)
    try:
        import matplotlib
        matplotlib.get_backend()
    except ImportError:
        pass
    app = build(models, batch)
    # Read by Gradio's queue when `queue` creates it; a value set by the user wins.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(ANALYTICS_SUMMARY_EVERY))
    app.queue(default_concurrency_limit=4, status_update_rate=STATUS_UPDATE_SECONDS)
    app.launch(server_name="127.0.0.1", server_port=port, share=False, js=SELECT_BRUSH_JS,
               theme=local_theme(), prevent_thread_lock=not block, show_error=False)
    return app


def main(argv: list[str] | None = None) -> None:
    """`python demo/app.py` and `python -m flaxdigits.demo`: parse arguments and serve."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="checkpoint to offer (repeatable)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--no-batch", dest="batch", action="store_false",
                    help="answer every prediction alone, not in batches (to compare under load)")
    args = ap.parse_args(argv)
    try:
        launch(args.model, args.port, batch=args.batch)
    except FlaxdigitsError as e:
        sys.exit(f"flaxdigits demo: error: {e}")


if __name__ == "__main__":
    main()
