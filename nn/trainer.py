"""The training loop: minibatch steps, a validation pass per epoch, checkpoints, resume.

    forward -> loss -> backward -> optimizer step, for every batch of every epoch

Around that core loop it keeps the work safe:
- last.npz (model, optimizer and loop state) after every epoch and on Ctrl-C, so `resume`
  continues a run that then ends with the same weights, bit for bit, as an uninterrupted one;
- best.npz (the model alone) whenever the validation metric `select` improves;
- a loss that turns NaN or infinite stops the run at once (DivergedError), leaving the last
  good checkpoints as they were.
All files are written atomically (see nn.checkpoint).

A model whose leading layers are fixed can train on their outputs, computed once
(nn.fixed_features); then checkpoint_model names the whole model that checkpoints hold.
"""

import math
import signal
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import metrics
from .checkpoint import CheckpointError
from .fixed_features import FeatureLoader
from .layers import sigmoid
from .losses import BCELoss
from .models import read_model, save_model


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class LoopState:
    """Where the loop is: the next epoch and batch, and what the epoch has summed so far."""

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    n_seen: int = 0
    history: list = field(default_factory=list)
    best_value: float = None
    best_epoch: int = 0


def predict_proba(model, images, indices=None, output="probabilities", batch_size=64):
    """Genre probabilities float32 (n, G) for images[indices] (uint8 (N, H, W, 3), or float
    rows (N, F) that model takes as they are, e.g. from precompute), in eval mode.

    output: what the model returns, "probabilities" or "logits" (then sigmoid is applied).
    """
    from .data import DataLoader  # data needs pandas and Pillow; keep them off this import path

    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    order = np.argsort(indices, kind="stable")  # the loader reads in sorted order
    no_labels = np.zeros((len(images), 0), np.float32)
    batches = DataLoader if images.dtype == np.uint8 else FeatureLoader
    loader = batches(images, no_labels, indices[order], batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    chunks = []
    for x, _ in loader:
        out = model(x)
        chunks.append(sigmoid(out) if output == "logits" else out.copy())
    model.train(was_training)
    probs = np.empty((len(indices), chunks[0].shape[1] if chunks else 0), np.float32)
    if chunks:
        probs[order] = np.concatenate(chunks)
    return probs


def validate(model, images, y, indices, output, prior):
    """The paper's val_loss (BCE on probabilities) and every honest metric, for the model and
    for the prior (G,), the training genre frequencies given to every poster."""
    probs = predict_proba(model, images, indices, output)
    truth = y[indices]
    result = metrics.evaluate(probs, truth)
    result["val_loss"] = BCELoss()(probs.astype(np.float64), truth.astype(np.float64))
    prior_result = metrics.evaluate(np.broadcast_to(prior, truth.shape), truth)
    return result, prior_result


class Trainer:
    """Train `model` on `loader` batches; validate on images[val_idx] after every epoch.

    meta: the checkpoint metadata (must hold the model spec under "model" and "output").
    select: the validation metric that picks best.npz (higher is better, e.g. "map");
    patience: stop after that many epochs without improvement (None: never stop early).
    transform(x, rng): optional augmentation of a float batch, in place or returned.
    on_epoch(epoch, train_loss, val, prior): called after each validation, for printing.
    progress: a tqdm bar over each epoch's batches, on stderr.
    checkpoint_model: the model that last.npz and best.npz hold (and resume loads), when
    `model` is its trained part (split_fixed) and loader and images give that part's inputs
    (FeatureLoader, precompute); default `model` itself.
    """

    def __init__(self, model, loss_fn, optimizer, loader, images, y, val_idx, out_dir, meta,
                 prior, select="map", patience=None, transform=None, on_epoch=None, seed=0,
                 progress=True, checkpoint_model=None):
        self.model, self.loss_fn, self.optimizer, self.loader = model, loss_fn, optimizer, loader
        self.checkpoint_model = model if checkpoint_model is None else checkpoint_model
        self.images, self.y, self.val_idx = images, y, val_idx
        self.out_dir = Path(out_dir)
        self.meta, self.prior = meta, prior
        self.select, self.patience = select, patience
        self.transform, self.on_epoch, self.seed = transform, on_epoch, seed
        self.progress = progress
        self.state = LoopState()
        self._stop_requested = False

    @property
    def last_path(self):
        return self.out_dir / "last.npz"

    @property
    def best_path(self):
        return self.out_dir / "best.npz"

    def resume(self, path):
        """Load model, optimizer and loop state from a last.npz written by this trainer.

        The optimizer state must be this run's optimizer's, array for array: one saved by
        another optimizer or with other settings (e.g. momentum) is a CheckpointError, raised
        before the model or the optimizer changes."""
        weights, meta, arrays = read_model(path)
        if meta.get("model") != self.meta["model"]:
            raise CheckpointError(f"{path}: it holds {meta.get('model')}, but this run trains "
                                  f"{self.meta['model']}")
        if "loop" not in meta:
            raise CheckpointError(f"{path}: no loop state in it; resume from a last.npz")
        try:
            state = LoopState(**meta["loop"])
        except TypeError as exc:
            raise CheckpointError(f"{path}: its loop state is damaged: {exc}") from None
        try:  # first: it checks every array before it changes anything
            self.optimizer.load_state_dict(
                {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")})
        except (KeyError, ValueError) as exc:
            name = type(self.optimizer).__name__
            raise CheckpointError(f"{path}: the optimizer state (optim.*) does not fit this "
                                  f"run's {name}: {exc.args[0]}") from None
        self.checkpoint_model.load_state_dict(weights)
        self.state = state

    def fit(self, epochs):
        """Run until `epochs` epochs are done (or early stopping). Returns the LoopState.

        Ctrl-C finishes the current step, saves last.npz and raises KeyboardInterrupt.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        previous = signal.signal(signal.SIGINT, self._request_stop)
        try:
            while self.state.epoch < epochs and not self._patience_ran_out():
                self._train_epoch()
                self._end_epoch()
        finally:
            signal.signal(signal.SIGINT, previous)
        return self.state

    def _request_stop(self, signum, frame):
        if self._stop_requested:  # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        self._stop_requested = True

    def _patience_ran_out(self):
        s = self.state
        return self.patience is not None and s.epoch - s.best_epoch >= self.patience

    def _train_epoch(self):
        s = self.state
        self.model.train()
        self.loader.set_epoch(s.epoch)
        batches = tqdm(islice(iter(self.loader), s.batch, None), desc=f"epoch {s.epoch + 1}",
                       total=len(self.loader) - s.batch, disable=not self.progress,
                       leave=False, unit="batch")
        for x, y in batches:
            # Every random draw of a step comes from (seed, epoch, batch): resuming replays it.
            rng = np.random.default_rng([self.seed, s.epoch, s.batch])
            for module in self.model.modules():
                if isinstance(getattr(module, "rng", None), np.random.Generator):
                    module.rng = np.random.default_rng(rng.integers(2 ** 63))
            if self.transform is not None:
                x = self.transform(x, rng)
            loss = self.loss_fn(self.model(x), y)
            if not math.isfinite(loss):
                raise DivergedError(
                    f"the loss became {loss} at epoch {s.epoch + 1}, batch {s.batch + 1}; "
                    f"the last good checkpoint is {self.last_path} (if any). Try a lower "
                    f"learning rate, e.g. --lr {self.optimizer.lr / 10:g}")
            self.model.backward(self.loss_fn.backward())
            self.optimizer.step()
            self.optimizer.zero_grad()
            s.loss_sum += loss * len(x)
            s.n_seen += len(x)
            s.batch += 1
            batches.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if self._stop_requested:
                self._save_last()
                raise KeyboardInterrupt(f"interrupted; saved {self.last_path}, continue with "
                                        f"--resume {self.last_path}")

    def _end_epoch(self):
        s = self.state
        train_loss = s.loss_sum / max(s.n_seen, 1)
        val, prior = validate(self.model, self.images, self.y, self.val_idx,
                              self.meta["output"], self.prior)
        s.epoch += 1
        s.history.append({"epoch": s.epoch, "train_loss": train_loss, "val": val})
        if self.on_epoch is not None:
            self.on_epoch(s.epoch, train_loss, val, prior)
        s.batch, s.loss_sum, s.n_seen = 0, 0.0, 0
        value = val[self.select]
        if s.best_value is None or value > s.best_value:  # the first epoch always counts
            s.best_value, s.best_epoch = value, s.epoch
            save_model(self.best_path, self.checkpoint_model,
                       {**self.meta, "epoch": s.epoch, "val": val, "prior_val": prior})
        self._save_last()

    def _save_last(self):
        optim = {f"optim.{k}": v for k, v in self.optimizer.state_dict().items()}
        save_model(self.last_path, self.checkpoint_model, {**self.meta,
                                                           "loop": asdict(self.state)}, optim)
