"""Score a checkpoint on every poster of a folder in the upstream layout, beside the prior.

    python examples/evaluate.py --checkpoint runs/paper/best.npz --data DIR [--json OUT]

The folder need not be the one the model trained on: any train.csv + Images/ will do. The
prior baseline is the checkpoint's own training genre frequencies, given to every poster.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from common import add_data_args, honest_table, run

from nn.checkpoint import CheckpointError
from nn.data import PosterDataset, find_dataset
from nn.metrics import evaluate
from nn.models import load_model
from nn.trainer import predict_proba

KEYS = ["n_posters", "paper_accuracy", "precision_at_3", "recall_at_3", "micro_f1_at_3", "map",
        "macro_auc"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    add_data_args(p)
    p.add_argument("--json", type=Path, help="write the scores here")
    args = p.parse_args(argv)

    model, meta, _ = load_model(args.checkpoint)
    width, height = meta["image_size"]
    data = PosterDataset(find_dataset(args.data), size=(width, height), cache_dir=args.cache_dir,
                         on_bad_image=args.on_bad_image, workers=args.workers)
    if data.genres != meta["genres"]:
        raise CheckpointError(f"{args.checkpoint}: trained on genres {meta['genres']}, but "
                              f"{data.root / 'train.csv'} has {data.genres}")
    if data.n_skipped:
        print(f"skipped {data.n_skipped} posters or rows, e.g. {data.skipped[0]}")
    probs = predict_proba(model, data.images, output=meta["output"])
    prior = np.broadcast_to(np.asarray(meta["train_prior"], np.float32), data.y.shape)
    scores = {"model": evaluate(probs, data.y), "prior": evaluate(prior, data.y)}
    print(f"{len(data)} posters in {data.root}, checkpoint {args.checkpoint}")
    print(honest_table(scores["model"], scores["prior"]))
    if args.json:
        out = {key: {who: scores[who][key] for who in scores} for key in KEYS}
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run(main)
