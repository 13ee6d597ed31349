"""Compare models on the posters, as the paper set out to, on honest metrics.

    python examples/compare_models.py --data ../shared/posters            # under an hour
    python examples/compare_models.py --data ../shared/posters --quick    # under 5 minutes

The models, all from scratch in NumPy, all on the same loader, split and metrics:
  prior      the label prior: every poster gets the training genre frequencies (the baseline)
  paper_mlp  the paper's MLP exactly as train_posters.py reproduces it: 350 x 350 pixels, BCE,
             plain SGD at lr 0.05, batches of 33, 5 epochs
  logistic   logistic regression on standardised 32 x 32 pixels (one linear layer)
  mlp        a tuned MLP on 32 x 32 pixels: standardised, dropout, Adam with weight decay,
             BCE on logits, early stopping on validation mAP
  cnn        a small CNN on 64 x 64 pixels, with random flips and shifts
  colour     an MLP on hand-made colour and texture features (nn.features.ImageFeatures) of
             64 x 64 posters, trained on random flips
  features   the same MLP on those features and on k-means patch features learned without
             labels (nn.kmeans.KMeansFeatures); five of them from different seeds, averaged
  ensemble   the mean of the cnn's and the features model's probabilities
Every model but the paper's starts with its output bias at the prior's log-odds
(nn.models.start_at_prior) and keeps the epoch with the best validation mAP. The feature models
compute their fixed feature layers once per poster (and per flipped training poster) and train
only the layers after them on the result (Plan.precompute); their checkpoints hold the whole
model, which takes raw posters.

The split is train_posters.py's: train_val_split(n, 0.25, seed=0); hyper-parameters were chosen
on its validation part only. Writes to --out (runs/compare): <model>/best.npz (each loads with
nn.models.load_model, evaluate.py and predict_poster.py), results.md and results.json, and PNG
plots when matplotlib is installed; copies the best checkpoint by validation mAP to --best
(runs/best.npz, predict_poster.py's default).
"""

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common import HONEST, add_data_args, run

import nn
from nn.augment import RandomFlipShift
from nn.data import DataLoader, PosterDataset, find_dataset, load_image, train_val_split
from nn.checkpoint import write_atomically
from nn.ensemble import Ensemble
from nn.kmeans import KMeansFeatures
from nn.metrics import average_precision, evaluate, format_table
from nn.models import (LabelPrior, build_model, feature_extractor, load_model, save_model,
                       start_at_prior, trainable_parameters)
from nn.preprocess import standardize_stats
from nn.fixed_features import FeatureLoader, precompute, random_flips, split_fixed, with_flips
from nn.trainer import Trainer, predict_proba

TARGETS = {"macro_auc": 0.70, "map": 0.20, "precision_at_3": 0.45}


@dataclass
class Plan:
    """How to build and train one model. kwargs go to the builder nn.models.MODELS[builder];
    standardize adds the mean and std it needs, measured on the training posters: of the
    colour "channels" or of each of the image "features"."""

    name: str
    builder: str
    size: int                       # posters are resized to size x size
    kwargs: dict = field(default_factory=dict)
    standardize: str = "channels"   # "channels", "features" or None
    output: str = "logits"          # "probabilities": a Sigmoid output trained with BCELoss
    optimizer: str = "adam"         # or "sgd"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 30
    patience: int = 5               # epochs without a better validation mAP; None: never stop
    max_shift: int = None           # augmentation: random flips, and shifts of up to this many
                                    # pixels (0: flips only); None: no augmentation
    from_prior: bool = True         # start the output bias at the prior (start_at_prior)
    precompute: bool = False        # run the model's fixed leading layers (feature extractor,
                                    # Standardize) once per poster, and flipped once per
                                    # training poster; train the rest on their outputs
    heads: int = 1                  # train this many models from seeds 0, 1, ... (on the same
                                    # precomputed features) and average their probabilities


PAPER = Plan("paper_mlp", "paper_mlp", 350, {"hidden": [512, 256, 128, 64]}, standardize=None,
             output="probabilities", optimizer="sgd", lr=0.05, batch_size=33, epochs=5,
             patience=None, from_prior=False)
COLOUR = {"histogram_grids": [1, 2], "hsv_bins": [8, 3, 3], "moments_grid": 4, "hog_cell": 8}
KMEANS = {"patch": 8, "stride": 4, "n_centroids": 256, "grid": 2}
FULL = [
    PAPER,
    Plan("logistic", "mlp", 32, {"hidden": []}, lr=1e-4, weight_decay=1e-1),
    Plan("mlp", "mlp", 32, {"hidden": [256], "dropout": 0.5}, lr=3e-4, weight_decay=1e-2),
    Plan("cnn", "small_cnn", 64, {"widths": [16, 32, 64, 128], "dropout": 0.3},
         weight_decay=1e-4, batch_size=32, epochs=40, max_shift=4),
    Plan("colour", "feature_mlp", 64, {"features": COLOUR, "hidden": [512], "dropout": 0.6},
         standardize="features", lr=3e-4, weight_decay=3e-3, max_shift=0, precompute=True),
    Plan("features", "feature_mlp", 64,
         {"features": COLOUR, "kmeans": KMEANS, "hidden": [512], "dropout": 0.6},
         standardize="features", lr=3e-4, weight_decay=3e-3, max_shift=0, precompute=True,
         heads=5),
]
ENSEMBLE = ["cnn", "features"]   # members must take the same image size
# --quick: the same models on small images for a few epochs; the paper's MLP at 32 x 32.
QUICK_SIZE = {"paper_mlp": 32, "cnn": 32, "colour": 32, "features": 32}
QUICK_EPOCHS = 6


def plans(quick, epochs=None):
    chosen = FULL
    if quick:
        chosen = [replace(p, size=QUICK_SIZE.get(p.name, p.size),
                          epochs=min(p.epochs, QUICK_EPOCHS)) for p in FULL]
        chosen = [replace(p, kwargs={**p.kwargs, "widths": [16, 32, 64]})
                  if p.builder == "small_cnn" else p for p in chosen]
    if epochs is not None:
        chosen = [replace(p, epochs=min(p.epochs, epochs)) for p in chosen]
    return chosen


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.add_argument("--quick", action="store_true", help="small images, few epochs: < 5 min")
    p.add_argument("--models", nargs="+", choices=[q.name for q in FULL], metavar="NAME",
                   help=f"train only these, of {[q.name for q in FULL]} (the prior always; "
                   "the ensemble when its members are trained)")
    p.add_argument("--epochs", type=int, help="at most this many epochs for every model")
    p.add_argument("--limit", type=int, help="use only the first N posters (for tests)")
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument("--best", type=Path, default=Path("runs/best.npz"),
                   help="where to copy the best model's checkpoint (by validation mAP)")
    return p.parse_args(argv)


class Posters:
    """The dataset at each image size a model asks for, decoded once (then read from the
    cache), with one train/validation split shared by every size."""

    def __init__(self, args):
        self.args = args
        self.root = find_dataset(args.data)
        self._by_size = {}
        first = self.at(32)
        if first.n_duplicates_dropped:
            print(f"dropped {first.n_duplicates_dropped} duplicate CSV rows")
        if first.n_skipped:
            print(f"skipped {first.n_skipped} posters or rows, e.g. {first.skipped[0]}")
        self.ids, self.genres, self.y = first.ids, first.genres, first.y
        self.train_idx, self.val_idx = train_val_split(len(first), 0.25, seed=0)
        self.prior = self.y[self.train_idx].mean(axis=0)

    def at(self, size):
        if size not in self._by_size:
            a = self.args
            data = PosterDataset(self.root, size=size, cache_dir=a.cache_dir, limit=a.limit,
                                 on_bad_image=a.on_bad_image, workers=a.workers,
                                 progress=sys.stderr.isatty())
            if self._by_size and data.ids != self.ids:
                raise RuntimeError(f"the posters read at {size} x {size} differ from the others")
            self._by_size[size] = data
        return self._by_size[size]

    def meta(self, spec, output, size, config):
        return {"model": spec, "output": output, "genres": self.genres,
                "image_size": [size, size], "train_prior": self.prior.tolist(),
                "config": config}


def train(plan, posters, out):
    """Build, train and select one model, or plan.heads of them averaged; returns its result
    dict (with "probs" on the validation posters and the path of its best checkpoint)."""
    if plan.precompute and plan.max_shift not in (None, 0):
        raise ValueError(f"{plan.name}: precomputed features can be flipped, not shifted")
    data = posters.at(plan.size)
    kwargs = {**plan.kwargs, "n_out": len(posters.genres)}
    if plan.builder in ("paper_mlp", "mlp"):
        kwargs["input_size"] = plan.size * plan.size * 3
    else:
        kwargs["image_size"] = [plan.size, plan.size]
    extract = None
    if plan.standardize == "channels":
        kwargs["mean"], kwargs["std"] = standardize_stats(data.images, posters.train_idx)
    elif plan.standardize == "features":
        # the feature layer first, k-means fitted, to measure what it computes
        extract = feature_extractor(kwargs["image_size"], kwargs.get("features"),
                                    kwargs.get("kmeans"))
        for layer in extract.modules():
            if isinstance(layer, KMeansFeatures):
                layer.fit(data.images[posters.train_idx])
        # batches of 64: for 256 posters the k-means layer's temporaries outgrow the cache and
        # it runs twice as slowly (the statistics come out the same)
        kwargs["mean"], kwargs["std"] = standardize_stats(data.images, posters.train_idx,
                                                          transform=extract, batch=64)
    started = time.perf_counter()
    features = None   # (inputs, rows): the fixed layers' outputs, computed once for every head
    runs = []
    for seed in range(plan.heads):
        # head 0 is the model of heads=1; each other head has its own weights, order, dropout
        spec = {"name": plan.builder, "kwargs": kwargs if seed == 0 else {**kwargs, "rng": seed}}
        model = build_model(spec)
        if extract is not None:
            model[0].load_state_dict(extract.state_dict())  # the fitted k-means dictionary
        if plan.precompute and features is None:
            features = precompute_features(plan, split_fixed(model)[0], data, posters)
        folder = out / plan.name if plan.heads == 1 else out / plan.name / f"head{seed}"
        runs.append(fit(plan, model, spec, seed, data, posters, features, folder))
    seconds = time.perf_counter() - started
    first = runs[0]
    if plan.heads == 1:
        checkpoint, output = first.best_path, plan.output
        best_epoch, epochs_run = first.state.best_epoch, first.state.epoch
        best, _, _ = load_model(checkpoint)
    else:  # the heads' best weights in one checkpoint that averages their probabilities
        checkpoint, output = out / plan.name / "best.npz", "probabilities"
        best, _ = save_ensemble([r.best_path for r in runs], checkpoint, posters, asdict(plan))
        best_epoch = [r.state.best_epoch for r in runs]
        epochs_run = [r.state.epoch for r in runs]
    return {"probs": predict_proba(best, data.images, posters.val_idx, output),
            "checkpoint": checkpoint, "n_parameters": best.num_parameters(),
            "train_time_s": seconds, "image_size": plan.size, "best_epoch": best_epoch,
            "epochs_run": epochs_run, "history": first.state.history, "plan": asdict(plan)}


def precompute_features(plan, fixed, data, posters):
    """(inputs, rows) for training on the outputs of the fixed layers: inputs, their outputs
    for every poster (what validation reads), and rows, what the FeatureLoader batches: the
    same, or with augmentation [plain | flipped] for random_flips."""
    inputs = precompute(fixed, data.images, np.arange(len(data.images)))
    if plan.max_shift is None:
        return inputs, inputs
    flipped = precompute(fixed, data.images, posters.train_idx, flip=True)
    return inputs, with_flips(inputs, flipped)


def fit(plan, model, spec, seed, data, posters, features, folder):
    """Train model (whose spec is spec) from seed, selecting its epochs by validation mAP;
    on precomputed features = (inputs, rows) if given. Returns the Trainer."""
    if plan.from_prior:
        start_at_prior(model, posters.prior)
    loss_fn = nn.BCEWithLogitsLoss() if plan.output == "logits" else nn.BCELoss()
    params = trainable_parameters(model)
    if plan.optimizer == "sgd":   # plain SGD: the same update, applied inside backward (faster)
        optimizer = nn.SGD(params, lr=plan.lr, weight_decay=plan.weight_decay,
                           step_in_backward=True)
    else:
        optimizer = nn.Adam(params, lr=plan.lr, weight_decay=plan.weight_decay)
    trained, inputs = model, data.images
    loader = DataLoader(data.images, data.y, posters.train_idx, plan.batch_size, seed=seed)
    transform = None
    if plan.max_shift is not None:
        transform = RandomFlipShift((plan.size, plan.size), plan.max_shift)
    if features is not None:  # train the layers after the fixed ones on what those computed
        _, trained = split_fixed(model)
        inputs, rows = features
        loader = FeatureLoader(rows, data.y, posters.train_idx, plan.batch_size, seed=seed)
        transform = None if transform is None else random_flips

    def report(epoch, train_loss, val, prior_val):
        head = f" head {seed}" if plan.heads > 1 else ""
        print(f"{plan.name}{head} epoch {epoch}: train loss {train_loss:.4f}, val loss "
              f"{val['val_loss']:.4f}, P@3 {val['precision_at_3']:.4f}, mAP {val['map']:.4f}, "
              f"AUC {val['macro_auc']:.4f}", flush=True)

    meta = posters.meta(spec, plan.output, plan.size, asdict(plan))
    trainer = Trainer(trained, loss_fn, optimizer, loader, inputs, data.y, posters.val_idx,
                      folder, meta, posters.prior, select="map", patience=plan.patience,
                      transform=transform, on_epoch=report, seed=seed,
                      progress=sys.stderr.isatty(), checkpoint_model=model)
    trainer.fit(plan.epochs)
    return trainer


def prior_baseline(posters, out):
    """The label prior as a (trivial) checkpoint, so evaluate.py can score it like the rest."""
    model = LabelPrior(posters.prior.tolist())
    spec = {"name": "label_prior", "kwargs": {"prior": posters.prior.tolist()}}
    path = out / "prior" / "best.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model, posters.meta(spec, "probabilities", 32, {}))
    probs = np.broadcast_to(posters.prior, (len(posters.val_idx), len(posters.genres)))
    return {"probs": probs, "checkpoint": path, "n_parameters": 0, "train_time_s": 0.0,
            "image_size": None, "best_epoch": None, "epochs_run": 0, "history": [], "plan": None}


def save_ensemble(checkpoints, path, posters, config):
    """An Ensemble of the trained models in checkpoints (same image size), their best weights
    in one checkpoint at path. Returns the model and its image size."""
    members = [load_model(c) for c in checkpoints]
    sizes = {tuple(meta["image_size"]) for _, meta, _ in members}
    if len(sizes) != 1:
        raise ValueError(f"ensemble members {[str(c) for c in checkpoints]} take different "
                         f"image sizes {sizes}")
    spec = {"name": "ensemble", "kwargs": {"members": [
        {"model": meta["model"], "output": meta["output"]} for _, meta, _ in members]}}
    # the loaded members themselves: what build_model(spec) would make, without a second copy
    model = Ensemble([m for m, _, _ in members], [meta["output"] for _, meta, _ in members])
    size = sizes.pop()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model, posters.meta(spec, "probabilities", size, config))
    return model, size


def combine(names, results, posters, out):
    """An Ensemble of trained models (same image size): their best weights in one checkpoint."""
    path = out / "ensemble" / "best.npz"
    model, size = save_ensemble([results[n]["checkpoint"] for n in names], path, posters,
                                {"members": names})
    # what Ensemble.forward averages, already computed by each member's own validation
    probs = np.mean([results[n]["probs"] for n in names], axis=0)
    return {"probs": probs, "checkpoint": path, "n_parameters": model.num_parameters(),
            "train_time_s": sum(results[n]["train_time_s"] for n in names),
            "image_size": size, "best_epoch": None, "epochs_run": 0, "history": [],
            "plan": None}


COLUMNS = {"precision_at_3": "P@3", "recall_at_3": "R@3", "micro_f1_at_3": "micro-F1@3",
           "map": "mAP", "macro_auc": "macro AUC", "paper_accuracy": "paper acc",
           "n_parameters": "parameters", "train_time_s": "train s"}


def results_table(results, best):
    """Validation metrics, size and training time, one row per model."""
    rows = {}
    for name, r in results.items():
        rows[name + (" (best)" if name == best else "")] = {
            COLUMNS[k]: f"{r[k]:.1f}" if k == "train_time_s" else r[k] for k in COLUMNS}
    return format_table(rows)


def training_table(results):
    """How each trained model was trained, one row per model."""
    rows = {}
    for name, r in results.items():
        plan = r.get("plan")
        if plan is None:
            continue
        shift = plan["max_shift"]
        augment = "-" if shift is None else "flips" + (f", shifts {shift}" if shift else "")
        rows[name] = {"input": f"{plan['size']} x {plan['size']}", "loss": {
            "logits": "BCE on logits", "probabilities": "BCE"}[plan["output"]],
            "optimizer": plan["optimizer"], "lr": f"{plan['lr']:g}",
            "weight decay": f"{plan['weight_decay']:g}", "batch": plan["batch_size"],
            "augmentation": augment, "epochs run": f"{r['epochs_run']} of {plan['epochs']}",
            "best epoch": r["best_epoch"]}
    return format_table(rows)


def write_results(results, best, posters, args, wall):
    """results.md (the tables, the targets) and results.json in args.out. Returns the table."""
    table = results_table(results, best)
    targets = ", ".join(
        f"{COLUMNS[k]} >= {v}: {results[best][k]:.3f}, "
        f"{'met' if results[best][k] >= v else 'not met'}" for k, v in TARGETS.items())
    command = " ".join(["python examples/compare_models.py", *sys.argv[1:]])
    (args.out / "results.md").write_text("\n".join([
        f"# Model comparison on {len(posters.val_idx)} validation posters", "",
        f"`{command}`: {wall / 60:.1f} min. Best by validation mAP: **{best}**, copied to "
        f"{args.best}.", "", table, "", training_table(results), "",
        f"Targets, for the best model: {targets}.", ""]))
    keep = ["checkpoint", "n_parameters", "train_time_s", "image_size", "best_epoch",
            "epochs_run", *HONEST, "n_posters", "plan", "history"]
    (args.out / "results.json").write_text(json.dumps({
        "best": best, "best_checkpoint": str(args.best), "wall_time_s": round(wall, 1),
        "split": {"val_fraction": 0.25, "seed": 0, "n_train": len(posters.train_idx),
                  "n_val": len(posters.val_idx)},
        "targets": TARGETS, "quick": args.quick,
        "models": {n: {k: str(r[k]) if k == "checkpoint" else r[k] for k in keep}
                   for n, r in results.items()}}, indent=1))
    return table


def copy_atomically(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as source:
        write_atomically(dst, lambda f: shutil.copyfileobj(source, f))


def make_plots(results, best, posters, out):
    from plotting import plot_curves, plot_genre_bars, plot_poster_predictions

    trained = {n: r["history"] for n, r in results.items() if r["history"]}
    if plot_curves({n: [h["val"]["map"] for h in hist] for n, hist in trained.items()},
                   out / "curves_val_map.png", title="validation mAP", ylabel="mAP") is None:
        return  # no matplotlib; plot_curves said how to get it
    plot_curves({n: [h["val"]["macro_auc"] for h in hist] for n, hist in trained.items()},
                out / "curves_val_auc.png", title="validation macro ROC-AUC", ylabel="AUC")
    plot_curves({n: [h["train_loss"] for h in hist] for n, hist in trained.items()},
                out / "curves_train_loss.png", title="training loss", ylabel="BCE")
    truth = posters.y[posters.val_idx]
    plot_genre_bars({best: average_precision(results[best]["probs"], truth),
                     "prior": average_precision(results["prior"]["probs"], truth)},
                    posters.genres, out / "genre_ap.png",
                    title="average precision per genre (validation)", ylabel="AP")
    shown = np.arange(min(10, len(posters.val_idx)))
    probs = results[best]["probs"][shown]
    images = [load_image(posters.root / "Images" / f"{posters.ids[i]}.jpg", (120, 178))
              for i in posters.val_idx[shown]]
    true_genres = [[g for g, v in zip(posters.genres, row) if v] for row in truth[shown]]
    predictions = [[(posters.genres[g], float(p[g])) for g in np.argsort(-p, kind="stable")[:3]]
                   for p in probs]
    plot_poster_predictions(images, true_genres, predictions, out / "posters.png")


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    posters = Posters(args)
    print(f"{len(posters.ids)} posters: {len(posters.train_idx)} train, "
          f"{len(posters.val_idx)} validation")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    chosen = plans(args.quick, args.epochs)
    if args.models:
        chosen = [p for p in chosen if p.name in args.models]

    results = {"prior": prior_baseline(posters, out)}
    for plan in chosen:
        print(f"--- {plan.name}: {plan.builder} at {plan.size} x {plan.size}", flush=True)
        results[plan.name] = train(plan, posters, out)
    if all(n in results for n in ENSEMBLE):
        results["ensemble"] = combine(ENSEMBLE, results, posters, out)

    truth = posters.y[posters.val_idx]
    for r in results.values():
        r.update(evaluate(r["probs"], truth))
    best = max(results, key=lambda n: results[n]["map"])
    copy_atomically(results[best]["checkpoint"], args.best)
    wall = time.perf_counter() - started

    table = write_results(results, best, posters, args, wall)
    print(table)
    print(f"best by validation mAP: {best}, copied to {args.best}; wrote {out / 'results.md'} "
          f"and results.json in {wall:.0f} s")
    make_plots(results, best, posters, out)
    return 0


if __name__ == "__main__":
    run(main)
