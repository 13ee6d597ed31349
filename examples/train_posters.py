"""Reproduce the paper: an MLP on raw 350 x 350 posters, BCE, plain SGD at lr 0.05, batch 33.

    python examples/train_posters.py --data ../shared/posters            # the paper, 5 epochs
    python examples/train_posters.py --limit 300 --size 64 --epochs 3    # a quick demonstration

The paper's "input layer, three hidden layers, output layer" is read here as
367500 -> 512 -> 256 -> 128 -> 64 -> 25 (change it with --hidden): a linear input layer to 512,
hidden layers of 256, 128 and 64, a linear output layer to the 25 genres, ReLU between, Sigmoid
out. Each epoch prints the paper's two lines, then honest metrics beside the label prior.
Writes to --out: last.npz (resumable), best.npz (best validation mAP), metrics.json, split.json.
"""

import argparse
import json
import time
from pathlib import Path

from common import add_data_args, honest_table, peak_rss_gb, run

import nn
from nn.data import DataLoader, PosterDataset, find_dataset, train_val_split
from nn.models import paper_mlp
from nn.trainer import Trainer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=33)
    p.add_argument("--hidden", type=int, nargs=4, default=[512, 256, 128, 64],
                   metavar=("IN", "H1", "H2", "H3"), help="the widths after the input layer "
                   "and the three hidden layers (default 512 256 128 64)")
    p.add_argument("--size", type=int, default=350, help="posters are resized to SIZE x SIZE")
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0, help="seeds the split, init and batches")
    p.add_argument("--limit", type=int, help="use only the first N posters (a quick demo)")
    p.add_argument("--out", type=Path, default=Path("runs/paper"))
    p.add_argument("--resume", type=Path, help="continue from a last.npz")
    p.add_argument("--plot", action="store_true", help="write loss.png to --out (matplotlib)")
    p.add_argument("--step-after-backward", action="store_true",
                   help="keep every gradient and update after backward, the textbook way "
                   "(same weights; by default SGD updates each layer inside backward, which "
                   "is faster and never holds the first layer's 753 MB gradient)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    data = PosterDataset(find_dataset(args.data), size=args.size, cache_dir=args.cache_dir,
                         limit=args.limit, on_bad_image=args.on_bad_image, workers=args.workers)
    if data.n_duplicates_dropped:
        print(f"dropped {data.n_duplicates_dropped} duplicate CSV rows")
    if data.n_skipped:
        print(f"skipped {data.n_skipped} posters or rows, e.g. {data.skipped[0]}")
    train_idx, val_idx = train_val_split(len(data), args.val_fraction, seed=args.seed)
    print(f"{len(data)} posters at {args.size} x {args.size}: {len(train_idx)} train, "
          f"{len(val_idx)} validation ({time.perf_counter() - started:.1f} s to load)")

    spec = {"name": "paper_mlp", "kwargs": {"input_size": args.size * args.size * 3,
                                            "hidden": args.hidden, "n_out": len(data.genres)}}
    model = paper_mlp(**spec["kwargs"], rng=args.seed)
    loss_fn = nn.BCELoss()
    # The same plain SGD either way; inside backward it skips storing a 753 MB gradient.
    optimizer = nn.SGD(model.parameters(), lr=args.lr,
                       step_in_backward=not args.step_after_backward)
    loader = DataLoader(data.images, data.y, train_idx, args.batch_size, seed=args.seed)
    prior = data.y[train_idx].mean(axis=0)
    meta = {"model": spec, "output": "probabilities", "genres": data.genres,
            "image_size": [args.size, args.size], "train_prior": prior.tolist(),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}

    def report(epoch, train_loss, val, prior_val):
        print(f"TRAIN LOSS: {train_loss:.4f}")
        print(f"Epoch [{epoch}], val_loss: {val['val_loss']:.4f}, "
              f"val_acc: {val['paper_accuracy']:.4f}")
        print(honest_table(val, prior_val), flush=True)

    trainer = Trainer(model, loss_fn, optimizer, loader, data.images, data.y, val_idx,
                      args.out, meta, prior, select="map", on_epoch=report, seed=args.seed)
    if args.resume:
        trainer.resume(args.resume)
        print(f"resumed from {args.resume} at epoch {trainer.state.epoch + 1}, "
              f"batch {trainer.state.batch + 1}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "split.json").write_text(json.dumps({
        "seed": args.seed, "train": [data.ids[i] for i in train_idx],
        "val": [data.ids[i] for i in val_idx]}))
    state = trainer.fit(args.epochs)

    wall = time.perf_counter() - started
    summary = {"history": state.history, "best_epoch": state.best_epoch,
               "wall_time_s": round(wall, 1), "peak_rss_gb": round(peak_rss_gb(), 2),
               "n_parameters": model.num_parameters(), "config": meta["config"]}
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(f"done in {wall:.0f} s, peak memory {summary['peak_rss_gb']:.2f} GB; best epoch "
          f"{state.best_epoch} (validation mAP) saved as {trainer.best_path}")
    if args.plot:
        from plotting import plot_curves
        plot_curves({"train": [h["train_loss"] for h in state.history],
                     "validation": [h["val"]["val_loss"] for h in state.history]},
                    args.out / "loss.png", title="paper MLP on posters", ylabel="BCE loss")
    return 0


if __name__ == "__main__":
    run(main)
