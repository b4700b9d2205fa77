"""flaxdigits: draw a digit, see what a JAX/Flax model thinks (a Gradio sketchpad).

The app is `flaxdigits.demo`, installed with the package (`pip install 'flaxdigits[demo]'`);
this file runs it the way a Hugging Face Space runs its app.py:

    python demo/app.py [--model PATH ...] [--port 7860]
"""

from flaxdigits.demo import main

if __name__ == "__main__":
    main()
