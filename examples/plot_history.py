"""Plot the loss curves of a finished run from its metrics.json (written by train_posters.py).

    python examples/plot_history.py runs/paper/metrics.json --out runs/paper/loss.png \
        [--baseline 0.2434]

--baseline draws a flat line at a reference loss, e.g. the validation BCE of the label prior
(every poster given the training genre frequencies): a model must get below it to have
learned anything from the pixels.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plotting import plot_curves  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", type=Path, help="a run's metrics.json")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--title", default="paper MLP on posters")
    p.add_argument("--baseline", type=float, help="a reference loss drawn as a flat line")
    p.add_argument("--baseline-label", default="label prior (validation)")
    args = p.parse_args(argv)
    try:
        history = json.loads(args.metrics.read_text())["history"]
        curves = {"train": [h["train_loss"] for h in history],
                  "validation": [h["val"]["val_loss"] for h in history]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.metrics}: not a run's metrics.json ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return 2
    if args.baseline is not None:
        curves[args.baseline_label] = [args.baseline] * len(history)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, args.out, title=args.title, ylabel="BCE loss")
    return 0


if __name__ == "__main__":
    sys.exit(main())
