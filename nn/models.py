"""Model builders, so a checkpoint can name its architecture and be rebuilt from that name."""

import inspect

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .conv import Conv2d, Dropout, GlobalAvgPool2d, MaxPool2d, Unflatten
from .ensemble import Ensemble
from .features import Concat, ImageFeatures
from .kmeans import KMeansFeatures
from .layers import Linear, Module, ReLU, Sequential, Sigmoid
from .preprocess import Standardize

PAPER_INPUT = 350 * 350 * 3
PAPER_HIDDEN = (512, 256, 128, 64)


def _linear_stack(sizes, rng, dtype=np.float32, dropout=0.0):
    """Linear layers through sizes = [input, *hidden, output], each hidden one followed by ReLU
    (and Dropout(dropout) if > 0); the last layer is linear.

    The first Linear computes no gradient for its input: that is the images, or features
    computed from them."""
    layers = []
    for i, (d, h) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(d, h, rng=rng, dtype=dtype, input_grad=i > 0))
        if i < len(sizes) - 2:
            layers.append(ReLU())
            if dropout:
                layers.append(Dropout(dropout, rng=rng))
    return layers


def paper_mlp(input_size=PAPER_INPUT, hidden=PAPER_HIDDEN, n_out=25, rng=0, dtype=np.float32,
              logits=False):
    """The paper's MLP: a linear input layer, three hidden layers and a linear output layer.

    With hidden = (512, 256, 128, 64) the layers are 367500->512 (the input layer),
    512->256, 256->128, 128->64 (the three hidden layers) and 64->25 (the output layer),
    ReLU after each but the last, then Sigmoid; logits=True leaves the Sigmoid out, for
    BCEWithLogitsLoss. The first layer computes no gradient for its input, the images.
    """
    layers = _linear_stack([input_size, *hidden, n_out], np.random.default_rng(rng), dtype)
    if not logits:
        layers.append(Sigmoid())
    return Sequential(*layers)


def mlp(input_size, mean, std, hidden=(), n_out=25, dropout=0.0, rng=0):
    """Standardize(mean, std) per channel, then an MLP with ReLU and Dropout; outputs logits.

    x: flat images (N, input_size) in [0, 1] -> logits (N, n_out). hidden=() is logistic
    regression: one Linear layer, a separate logistic model per genre.
    """
    return Sequential(Standardize(mean, std),
                      *_linear_stack([input_size, *hidden, n_out], np.random.default_rng(rng),
                                     dropout=dropout))


def small_cnn(image_size, mean, std, widths=(16, 32, 64, 128), n_out=25, dropout=0.3, rng=0):
    """Standardize per channel, then blocks of Conv2d 3x3 (padding 1) -> ReLU -> MaxPool2d(2)
    (no pool after the last block), GlobalAvgPool2d, Dropout and a Linear layer to logits.

    x: flat images (N, H*W*3) in [0, 1], image_size = (H, W) -> logits (N, n_out). Each pool
    halves the image, so the last convolution sees H / 2^(len(widths) - 1) pixels a side, and
    global average pooling makes the head independent of where on the poster a pattern is.
    """
    rng = np.random.default_rng(rng)
    h, w = image_size
    layers = [Standardize(mean, std), Unflatten((h, w, 3))]
    channels = 3
    for i, width in enumerate(widths):
        if i:
            layers.append(MaxPool2d(2))
        layers += [Conv2d(channels, width, 3, padding=1, rng=rng, input_grad=i > 0), ReLU()]
        channels = width
    layers += [GlobalAvgPool2d(), Dropout(dropout, rng=rng), Linear(channels, n_out, rng=rng)]
    return Sequential(*layers)


def feature_extractor(image_size, features=None, kmeans=None):
    """The fixed first layer of feature_mlp: ImageFeatures(image_size, **features) and/or
    KMeansFeatures(image_size, **kmeans) (None leaves one out), side by side in a Concat."""
    parts = []
    if features is not None:
        parts.append(ImageFeatures(image_size, **features))
    if kmeans is not None:
        parts.append(KMeansFeatures(image_size, **kmeans))
    if not parts:
        raise ValueError("feature_extractor needs features, kmeans or both")
    return parts[0] if len(parts) == 1 else Concat(*parts)


def feature_mlp(image_size, mean, std, features=None, kmeans=None, hidden=(), n_out=25,
                dropout=0.0, rng=0):
    """feature_extractor(image_size, features, kmeans), each of its F outputs standardised
    (mean and std hold F entries), then an MLP as in mlp(); outputs logits.

    x: flat images (N, H*W*3) in [0, 1] -> logits (N, n_out). A KMeansFeatures part starts
    empty: fit it (KMeansFeatures.fit) or load a checkpoint's weights before use.
    """
    extract = feature_extractor(image_size, features, kmeans)
    # The spec may come from a checkpoint: settings that shape no parameter (histogram bins,
    # grids) must still agree with mean, or the first forward could ask for gigabytes.
    if len(mean) != extract.n_features:
        raise ValueError(f"feature_mlp: its features give {extract.n_features} columns, but "
                         f"mean and std have {len(mean)}")
    return Sequential(extract, Standardize(mean, std),
                      *_linear_stack([len(mean), *hidden, n_out], np.random.default_rng(rng),
                                     dropout=dropout))


def trainable_parameters(model):
    """The parameters that gradient steps may change: all but those of layers fitted in another
    way before training (learned = False, e.g. the k-means dictionary of KMeansFeatures)."""
    fixed = {id(p) for m in model.modules() if not getattr(m, "learned", True)
             for p in m.parameters()}
    return [p for p in model.parameters() if id(p) not in fixed]


class LabelPrior(Module):
    """The baseline that ignores the image: every poster gets the training genre frequencies.

    x: (N, D) -> probabilities (N, G) = prior for every row. No parameters, nothing to learn.
    """

    def __init__(self, prior):
        self.prior = np.asarray(prior, np.float32)

    def forward(self, x):
        return np.tile(self.prior.astype(x.dtype), (len(x), 1))

    def backward(self, g):
        raise RuntimeError("LabelPrior has nothing to learn")

    def __repr__(self):
        return f"LabelPrior({len(self.prior)} genres)"


def ensemble(members):
    """Ensemble of the models that members = [{"model": spec, "output": kind}, ...] describe;
    load each member's trained weights into ensemble.members[i]. Returns probabilities."""
    return Ensemble([build_model(m["model"]) for m in members], [m["output"] for m in members])


def start_at_prior(model, prior):
    """Set the output layer's bias to the log-odds of the training genre frequencies (G,), so
    that an untrained model of logits already predicts the label prior.

    Why: a bias of 0 predicts 50% for every genre, and a genre on 1% of posters needs a bias
    of -4.6. Adam moves a parameter by at most about lr = 1e-3 a step, 64 steps an epoch: some
    70 epochs would go to learning the prior, and until then the rare genres rank too high.
    """
    p = np.clip(np.asarray(prior, np.float64), 1e-4, 1 - 1e-4)
    last = next(m for m in reversed(list(model.modules())) if isinstance(m, Linear))
    last.bias.data[:] = np.log(p / (1 - p))


# A checkpoint names its architecture as {"name": ..., "kwargs": {...}}, JSON only, so loading
# rebuilds the model from this table and copies the saved arrays in: no code is ever unpickled.
MODELS = {"label_prior": LabelPrior, "paper_mlp": paper_mlp, "mlp": mlp, "small_cnn": small_cnn,
          "feature_mlp": feature_mlp, "ensemble": ensemble}


def build_model(spec):
    """The model that spec = {"name": ..., "kwargs": {...}} describes, freshly initialised."""
    builder, kwargs = _lookup(spec)
    return builder(**kwargs)


def _lookup(spec):
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name], spec.get("kwargs", {})


def parameter_shapes(spec):
    """{name: (shape, dtype)} of the parameters build_model(spec) would make, as its
    state_dict() names them, worked out from spec alone: nothing is allocated.

    Why: a checkpoint's spec is JSON anyone can edit. load_model compares these with the
    arrays the file really holds before it builds the model, so a spec asking for input_size
    10**12 is refused instead of allocating terabytes. Every architecture in MODELS has its
    function in _SHAPES; the builder's own signature supplies the defaults and refuses unknown
    kwargs, as calling it would.
    """
    builder, kwargs = _lookup(spec)
    return _SHAPES[builder](**_arguments(builder, **kwargs))


def _arguments(function, *args, **kwargs):
    """{parameter: value} of the call function(*args, **kwargs), defaults filled in."""
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def _affine(weight_shape, dtype=np.float32):
    """The parameters of a Linear or Conv2d layer whose weight has weight_shape."""
    dtype = np.dtype(dtype)
    return {"weight": (tuple(weight_shape), dtype), "bias": ((weight_shape[-1],), dtype)}


def _sequential(*layers):
    """Names as Sequential(*layers) gives them; layers are {name: (shape, dtype)} dicts."""
    return {f"{i}.{name}": value for i, layer in enumerate(layers) for name, value in layer.items()}


def _linear_stack_shapes(sizes, dtype=np.float32, dropout=0.0):
    """_linear_stack(sizes, dtype=dtype, dropout=dropout), a dict per layer."""
    layers = []
    for i, (d, h) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(_affine((d, h), dtype))
        if i < len(sizes) - 2:
            layers += [{}, {}] if dropout else [{}]  # ReLU, Dropout
    return layers


def _paper_mlp_shapes(input_size, hidden, n_out, dtype, **_):
    return _sequential(*_linear_stack_shapes([input_size, *hidden, n_out], dtype))


def _mlp_shapes(input_size, hidden, n_out, dropout, **_):
    return _sequential({}, *_linear_stack_shapes([input_size, *hidden, n_out], dropout=dropout))


def _small_cnn_shapes(widths, n_out, **_):
    layers = [{}, {}]  # Standardize, Unflatten
    channels = 3
    for i, width in enumerate(widths):
        if i:
            layers.append({})  # MaxPool2d
        layers += [_affine((3, 3, channels, width)), {}]  # Conv2d, ReLU
        channels = width
    return _sequential(*layers, {}, {}, _affine((channels, n_out)))  # pool, Dropout, Linear


def _feature_mlp_shapes(image_size, mean, features, kmeans, hidden, n_out, dropout, **_):
    extract = {}  # ImageFeatures has no parameters
    if kmeans is not None:
        k = _arguments(KMeansFeatures, image_size, **kmeans)
        d = k["patch"] * k["patch"] * 3
        f32 = np.dtype(np.float32)
        extract = {"patch_mean": ((d,), f32), "whiten": ((d, d), f32),
                   "centroids": ((k["n_centroids"], d), f32)}
        if features is not None:  # Concat(ImageFeatures, KMeansFeatures)
            extract = {f"1.{name}": value for name, value in extract.items()}
    return _sequential(extract, {},  # Standardize
                       *_linear_stack_shapes([len(mean), *hidden, n_out], dropout=dropout))


def _ensemble_shapes(members):
    return {f"{i}.{name}": value for i, member in enumerate(members)
            for name, value in parameter_shapes(member["model"]).items()}


_SHAPES = {LabelPrior: lambda prior: {}, paper_mlp: _paper_mlp_shapes, mlp: _mlp_shapes,
           small_cnn: _small_cnn_shapes, feature_mlp: _feature_mlp_shapes,
           ensemble: _ensemble_shapes}


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

    Checks what prediction relies on (output kind, genre names, an image size the model
    takes), and that the saved weights have the names, shapes and dtypes the spec implies, all
    before building: a damaged or foreign checkpoint gets a CheckpointError naming the field or
    parameter, and a spec cannot ask for more parameters than the file holds, nor image_size
    for larger images than the model takes or MAX_IMAGE_SIDE allows.
    """
    state, meta, arrays = read_model(path)
    try:
        model = build_model(meta["model"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from None
    model.load_state_dict(state)
    return model, meta, arrays


def read_model(path):
    """(weights {name: array}, meta, other arrays) from a checkpoint, checked as load_model
    checks them, without building the model: for copying into a model that already exists
    (Trainer.resume), where a second paper MLP would cost 753 MB and its random init."""
    arrays, meta = load_checkpoint(path)
    _check_prediction_meta(path, meta)
    state = {k[len("model."):]: arrays.pop(k) for k in list(arrays) if k.startswith("model.")}
    _check_weights(path, meta.get("model"), state)
    _check_image_size(path, meta)
    return state, meta, arrays


def _check_weights(path, spec, state):
    """CheckpointError unless state ({name: array}) holds exactly the parameters, shapes and
    dtypes that spec implies: checked before build_model allocates anything."""
    try:
        expected = parameter_shapes(spec)
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from None
    refuse = f"{path}: the weights do not fit {spec['name']}:"
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        raise CheckpointError(f"{refuse} missing {sorted(missing)}, "
                              f"unexpected {sorted(unexpected)}")
    for name, (shape, dtype) in expected.items():
        found = state[name]
        if (found.shape, found.dtype) != (shape, dtype):
            raise CheckpointError(f"{refuse} {name}: shape {found.shape} {found.dtype} in the "
                                  f"file, but the spec needs {shape} {dtype}")


def _size_kwargs(spec):
    """[(name, key, value)]: the kwargs of spec that fix the size of the images it takes:
    input_size (width * height * 3) of paper_mlp and mlp, image_size ([height, width]) of
    small_cnn and feature_mlp, those of every member of an ensemble; the label prior has none."""
    builder, kwargs = _lookup(spec)
    arguments = _arguments(builder, **kwargs)
    if builder is ensemble:
        return [kwarg for m in arguments["members"] for kwarg in _size_kwargs(m["model"])]
    return [(spec["name"], key, arguments[key]) for key in ("input_size", "image_size")
            if key in arguments]


def _check_image_size(path, meta):
    """CheckpointError unless the model takes images of meta's image_size = [width, height],
    the size prediction resizes every poster to. Run after _check_weights, which has refused
    any spec _size_kwargs could not read."""
    width, height = meta["image_size"]
    needs = {"input_size": width * height * 3, "image_size": [height, width]}
    for name, key, value in _size_kwargs(meta["model"]):
        if value != needs[key]:
            raise CheckpointError(f"{path}: 'image_size' {meta['image_size']} (width, height) "
                                  f"needs {name} {key} {needs[key]}, but the spec has {value!r}")


# Pixels per side of image_size, far above a poster's own (about 300 x 450). Prediction resizes
# every poster to image_size, and where the weights do not depend on it (small_cnn, label_prior,
# a k-means feature_mlp) the file bounds it no other way: 4096 x 4096 is 48 MiB a poster.
MAX_IMAGE_SIDE = 4096


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
            and all(isinstance(v, int) and 0 < v <= MAX_IMAGE_SIDE for v in size)):
        problems.append(f"'image_size' must be [width, height], 1 to {MAX_IMAGE_SIDE} each, "
                        f"found {size!r}")
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
