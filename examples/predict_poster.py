"""Name the genres of any poster: the top three with their probabilities (the paper's Fig. 6).

    python examples/predict_poster.py poster.jpg [more.png ...] [--checkpoint CKPT]
    python examples/predict_poster.py Images/tt*.jpg --labels train.csv --plot runs/pred.png

Any size, JPEG or PNG, any colour mode. Without --checkpoint it uses the best model of
examples/compare_models.py (runs/best.npz) when that exists, else runs/paper/best.npz.
--plot draws the posters with their top genres underneath (matplotlib); --labels adds each
poster's true genres, found by its file name (<Id>.jpg) in a labels CSV.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from common import run

from nn.data import DataError, load_image, read_labels, to_float
from nn.layers import sigmoid
from nn.models import load_model

DEFAULTS = [Path("runs/best.npz"), Path("runs/paper/best.npz")]
DOCS = Path(__file__).resolve().parents[1] / "docs"
POSTER_VIEW = (150, 225)   # drawn at a poster's 2:3, not squashed to the model's square


def default_checkpoint():
    for path in DEFAULTS:
        if path.exists():
            return path
    raise FileNotFoundError("no checkpoint found at " + " or ".join(map(str, DEFAULTS)) +
                            ": train one with examples/train_posters.py or pass --checkpoint")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--plot", type=Path, metavar="OUT.png",
                   help="draw the posters with their top genres underneath (matplotlib)")
    p.add_argument("--labels", type=Path, metavar="CSV",
                   help="a labels CSV (Id, Genre, one 0/1 column per genre): adds the true "
                   "genres of posters named <Id>.jpg to the plot")
    args = p.parse_args(argv)
    if args.plot and args.plot.resolve().is_relative_to(DOCS):
        p.error(f"--plot {args.plot}: posters are copyrighted and never go under docs/; "
                "write the plot to a run folder, e.g. runs/paper/predictions.png")
    truth = _true_genres(args.labels) if args.labels else {}

    checkpoint = args.checkpoint or default_checkpoint()
    model, meta, _ = load_model(checkpoint)
    model.eval()
    width, height = meta["image_size"]
    failed = 0
    drawn = []   # (pixels to show, true genres or None, [(genre, probability), ...])
    for path in args.images:
        try:
            pixels = load_image(path, size=(width, height))
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        out = model(to_float(pixels[None]))[0]
        probs = sigmoid(out) if meta["output"] == "logits" else out
        top = np.argsort(-probs, kind="stable")[:args.top]
        print(f"{path}: " + ", ".join(f"{meta['genres'][g]} {probs[g]:.2f}" for g in top))
        if args.plot:
            drawn.append((load_image(path, size=POSTER_VIEW), truth.get(path.stem),
                          [(meta["genres"][g], float(probs[g])) for g in top]))
    if args.plot and drawn:
        from plotting import plot_poster_predictions
        plot_poster_predictions(*zip(*drawn), args.plot)
    return 2 if failed else 0


def _true_genres(csv_path):
    """{poster id: [genre names]} from a labels CSV."""
    labels = read_labels(csv_path, on_bad_row="skip")
    return {i: [labels.genres[g] for g in np.flatnonzero(row)]
            for i, row in zip(labels.ids, labels.y)}


if __name__ == "__main__":
    run(main)
