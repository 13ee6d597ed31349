"""Model builders, so a checkpoint can name its architecture and be rebuilt from that name."""

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .layers import Linear, ReLU, Sequential, Sigmoid

PAPER_INPUT = 350 * 350 * 3
PAPER_HIDDEN = (512, 256, 128, 64)


def paper_mlp(input_size=PAPER_INPUT, hidden=PAPER_HIDDEN, n_out=25, rng=0, dtype=np.float32,
              logits=False):
    """The paper's MLP: a linear input layer, three hidden layers and a linear output layer.

    With hidden = (512, 256, 128, 64) the layers are 367500->512 (the input layer),
    512->256, 256->128, 128->64 (the three hidden layers) and 64->25 (the output layer),
    ReLU after each but the last, then Sigmoid; logits=True leaves the Sigmoid out, for
    BCEWithLogitsLoss. The first layer computes no gradient for its input, the images.
    """
    rng = np.random.default_rng(rng)
    sizes = [input_size, *hidden, n_out]
    layers = []
    for i, (d, h) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(d, h, rng=rng, dtype=dtype, input_grad=i > 0))
        layers.append(ReLU())
    layers.pop()  # the output layer is linear: no ReLU after it
    if not logits:
        layers.append(Sigmoid())
    return Sequential(*layers)


# A checkpoint names its architecture as {"name": ..., "kwargs": {...}}, JSON only, so loading
# rebuilds the model from this table and copies the saved arrays in: no code is ever unpickled.
MODELS = {"paper_mlp": paper_mlp}


def build_model(spec):
    """The model that spec = {"name": ..., "kwargs": {...}} describes, freshly initialised."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name](**spec.get("kwargs", {}))


def save_model(path, model, meta, extra_arrays=None):
    """Write the model's parameters ("model.<name>") and meta (which must hold "model", the
    spec) atomically to path; extra_arrays (e.g. optimizer state) go in under their own names."""
    if "model" not in meta:
        raise ValueError("meta needs the model's spec under 'model'")
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update(extra_arrays or {})
    save_checkpoint(path, arrays, meta)


def load_model(path):
    """(model, meta, other arrays) from a checkpoint written by save_model.

    Checks what prediction relies on (output kind, genre names, image size) before building,
    so a damaged or foreign checkpoint gets a CheckpointError naming the field.
    """
    arrays, meta = load_checkpoint(path)
    _check_prediction_meta(path, meta)
    try:
        model = build_model(meta.get("model"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from None
    state = {k[len("model."):]: arrays.pop(k) for k in list(arrays) if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit {meta['model']['name']}: "
                              f"{exc}") from None
    return model, meta, arrays


def _check_prediction_meta(path, meta):
    problems = []
    if meta.get("output") not in ("probabilities", "logits"):
        problems.append(f"'output' must be 'probabilities' or 'logits', found "
                        f"{meta.get('output')!r}")
    genres = meta.get("genres")
    if not (isinstance(genres, list) and genres and all(isinstance(g, str) for g in genres)):
        problems.append(f"'genres' must be a list of names, found {genres!r}")
    size = meta.get("image_size")
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and v > 0 for v in size)):
        problems.append(f"'image_size' must be [width, height], found {size!r}")
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
