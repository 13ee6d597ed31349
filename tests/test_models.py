"""Model checkpoints: rebuilt from JSON, validated before use, never unpickled."""

import re
import tracemalloc

import numpy as np
import pytest

from nn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nn.models import MODELS, build_model, load_model, paper_mlp, parameter_shapes, save_model

SPEC = {"name": "paper_mlp", "kwargs": {"input_size": 12, "hidden": [6, 5, 4, 3], "n_out": 4}}
META = {"model": SPEC, "output": "probabilities", "genres": ["A", "B", "C", "D"],
        "image_size": [2, 2]}


@pytest.fixture
def checkpoint(tmp_path):
    model = build_model(SPEC)
    save_model(tmp_path / "m.npz", model, META)
    return tmp_path / "m.npz", model


def test_roundtrip_rebuilds_the_same_model(checkpoint, rng):
    path, model = checkpoint
    loaded, meta, extra = load_model(path)
    x = rng.random((3, 12), dtype=np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))
    assert meta == META and extra == {}


def test_paper_mlp_layout():
    model = paper_mlp(350 * 350 * 3, rng=0)
    shapes = [p.data.shape for p in model.parameters()][::2]
    assert shapes == [(367500, 512), (512, 256), (256, 128), (128, 64), (64, 25)]
    assert model[0].input_grad is False and type(model[-1]).__name__ == "Sigmoid"


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model({"name": "resnet"})
    save_checkpoint(tmp_path / "m.npz", {}, {**META, "model": {"name": "resnet"}})
    with pytest.raises(CheckpointError, match="m.npz: cannot rebuild.*resnet"):
        load_model(tmp_path / "m.npz")


def test_weights_that_do_not_fit_the_architecture_are_refused(checkpoint):
    path, _ = checkpoint
    arrays, meta = load_checkpoint(path)
    arrays["model.0.weight"] = np.zeros((12, 7), np.float32)
    save_checkpoint(path, arrays, meta)
    with pytest.raises(CheckpointError, match=r"do not fit paper_mlp.*0\.weight: shape \(12, 7\)"):
        load_model(path)


@pytest.mark.parametrize("kwargs, message", [
    ({"input_size": 10**12}, r"0\.weight: shape \(12, 6\) float32 in the file, but the spec "
                             r"needs \(1000000000000, 6\) float32"),
    ({"input_size": 10**7}, r"0\.weight: shape \(12, 6\) float32 .* \(10000000, 6\)"),
    ({"hidden": [6, 7, 4, 3]}, r"2\.weight: shape \(6, 5\) float32 .* \(6, 7\) float32"),
    ({"hidden": [6, 5, 4]}, r"missing \[\], unexpected \['8\.bias', '8\.weight'\]"),
    ({"dtype": "float64"}, r"0\.weight: shape \(12, 6\) float32 .* \(12, 6\) float64"),
    ({"hidden": 6}, "cannot rebuild the model: .*iterable"),
    ({"width": 6}, "cannot rebuild the model: .*'width'"),
], ids=["4 TB input", "240 MB input", "hidden size", "layer count", "dtype", "hidden not a list",
        "unknown kwarg"])
def test_a_spec_the_weights_do_not_fit_is_refused_before_building(checkpoint, kwargs, message):
    """The spec is JSON anyone can edit: asking for input_size 10**12 must not allocate 4 TB
    (or, at 10**7, a quiet 240 MB) before the weights are compared with it."""
    path, _ = checkpoint
    arrays, meta = load_checkpoint(path)
    spec = {**SPEC, "kwargs": {**SPEC["kwargs"], **kwargs}}
    save_checkpoint(path, arrays, {**meta, "model": spec})
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"m\.npz: .*" + message):
            load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


@pytest.mark.parametrize("field, value, message", [
    ("output", "softmax", "'output' must be"),
    ("genres", "Drama", "'genres' must be"),
    ("image_size", [350], "'image_size' must be"),
])
def test_metadata_prediction_relies_on_is_validated(checkpoint, field, value, message):
    path, _ = checkpoint
    arrays, meta = load_checkpoint(path)
    save_checkpoint(path, arrays, {**meta, field: value})
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


# --- the comparison's models (examples/compare_models.py) --------------------------------------

from nn.models import LabelPrior, start_at_prior, trainable_parameters  # noqa: E402

BUILDERS = [
    {"name": "mlp", "kwargs": {"input_size": 48, "mean": [0.4] * 3, "std": [0.2] * 3,
                               "hidden": [8], "dropout": 0.5, "n_out": 4}},
    {"name": "mlp", "kwargs": {"input_size": 48, "mean": [0.4] * 3, "std": [0.2] * 3,
                               "n_out": 4}},
    {"name": "small_cnn", "kwargs": {"image_size": [8, 8], "mean": [0.4] * 3, "std": [0.2] * 3,
                                     "widths": [4, 6], "n_out": 4}},
    {"name": "feature_mlp", "kwargs": {"image_size": [8, 8], "mean": [0.0] * 46,
                                       "std": [1.0] * 46, "hidden": [5], "n_out": 4,
                                       "features": {"histogram_grids": [1], "hsv_bins": [2, 2, 2],
                                                    "moments_grid": 1, "hog_cell": 4,
                                                    "hog_bins": 6}}},
    {"name": "label_prior", "kwargs": {"prior": [0.1, 0.2, 0.3, 0.4]}},
    {"name": "paper_mlp", "kwargs": {"input_size": 48, "hidden": [6, 5], "n_out": 4}},
    {"name": "feature_mlp", "kwargs": {"image_size": [8, 8], "mean": [0.0] * 12,
                                       "std": [1.0] * 12, "n_out": 4,
                                       "kmeans": {"patch": 4, "stride": 4, "n_centroids": 3}}},
    {"name": "feature_mlp", "kwargs": {"image_size": [8, 8], "mean": [0.0] * 58,
                                       "std": [1.0] * 58, "hidden": [5], "dropout": 0.5,
                                       "n_out": 4, "kmeans": {"patch": 4, "n_centroids": 3},
                                       "features": {"histogram_grids": [1], "hsv_bins": [2, 2, 2],
                                                    "moments_grid": 1, "hog_cell": 4,
                                                    "hog_bins": 6}}},
]
BUILDERS.append({"name": "ensemble", "kwargs": {"members": [
    {"model": BUILDERS[0], "output": "logits"},
    {"model": {"name": "paper_mlp", "kwargs": {"input_size": 48, "n_out": 4}},
     "output": "probabilities"}]}})


@pytest.mark.parametrize("spec", BUILDERS, ids=lambda s: s["name"])
def test_every_builder_roundtrips_through_a_checkpoint(spec, rng, tmp_path):
    model = build_model(spec)
    for p in model.parameters():  # not the initial values, so loading must copy them
        p.data[:] = rng.standard_normal(p.data.shape)
    side = 8 if "image_size" in spec["kwargs"] else 4
    save_model(tmp_path / "m.npz", model, {**META, "model": spec, "genres": list("ABCD"),
                                           "image_size": [side, side]})
    loaded, _, _ = load_model(tmp_path / "m.npz")
    x = rng.random((3, side * side * 3), dtype=np.float32)
    model.eval()
    loaded.eval()
    np.testing.assert_array_equal(loaded(x), model(x))
    assert loaded(x).shape == (3, 4)


def test_feature_settings_that_shape_no_weight_must_agree_with_the_standardisation(tmp_path):
    """hsv_bins 2000^3 changes no parameter's shape, so the weights check passes; the first
    forward would then allocate ~60 GB. The builder refuses it, naming the mismatch."""
    spec = next(s for s in BUILDERS if s["name"] == "feature_mlp"
                and "kmeans" not in s["kwargs"])
    save_model(tmp_path / "m.npz", build_model(spec),
               {**META, "model": spec, "genres": list("ABCD"), "image_size": [8, 8]})
    arrays, meta = load_checkpoint(tmp_path / "m.npz")
    features = {**spec["kwargs"]["features"], "hsv_bins": [2000, 2000, 2000]}
    huge = {**spec, "kwargs": {**spec["kwargs"], "features": features}}
    save_checkpoint(tmp_path / "m.npz", arrays, {**meta, "model": huge})
    with pytest.raises(CheckpointError, match=r"m\.npz: cannot rebuild the model: feature_mlp: "
                                              r"its features give \d+ columns, but mean"):
        load_model(tmp_path / "m.npz")


@pytest.mark.parametrize("spec", BUILDERS + [
    {"name": "paper_mlp", "kwargs": {"input_size": 5, "hidden": [3], "dtype": "float64"}},
    {"name": "small_cnn", "kwargs": {"image_size": [8, 8], "mean": [0.4] * 3, "std": [0.2] * 3}},
], ids=lambda s: s["name"])
def test_parameter_shapes_are_those_of_the_built_model(spec):
    assert parameter_shapes(spec) == {name: (p.shape, p.dtype)
                                      for name, p in build_model(spec).state_dict().items()}


def test_every_registered_architecture_is_tested():
    assert {spec["name"] for spec in BUILDERS} == set(MODELS)


# small_cnn takes image_size = [height, width]; meta's image_size is [width, height], the size
# prediction resizes posters to (load_image's size), so this one fits meta [6, 8], not [8, 6].
TALL_CNN = {"name": "small_cnn", "kwargs": {"image_size": [8, 6], "mean": [0.4] * 3,
                                            "std": [0.2] * 3, "widths": [4], "n_out": 4}}


@pytest.mark.parametrize("spec, fits, wrong, message", [
    (SPEC, [2, 2], [1000, 1000], "needs paper_mlp input_size 3000000, but the spec has 12"),
    (SPEC, [1, 4], [4, 4], "needs paper_mlp input_size 48, but the spec has 12"),
    (BUILDERS[1], [4, 4], [8, 8], "needs mlp input_size 192, but the spec has 48"),
    (TALL_CNN, [6, 8], [8, 6], r"needs small_cnn image_size \[6, 8\], but the spec has \[8, 6\]"),
    (BUILDERS[3], [8, 8], [16, 16], r"needs feature_mlp image_size \[16, 16\], .* \[8, 8\]"),
    ({"name": "ensemble", "kwargs": {"members": [
        {"model": BUILDERS[1], "output": "logits"},
        {"model": {**TALL_CNN, "kwargs": {**TALL_CNN["kwargs"], "image_size": [4, 4]}},
         "output": "logits"}]}},
     [4, 4], [2, 8], r"needs small_cnn image_size \[8, 2\], but the spec has \[4, 4\]"),
], ids=["paper_mlp", "paper_mlp, not square", "mlp", "small_cnn, transposed", "feature_mlp",
        "ensemble, second member"])
def test_an_image_size_the_model_does_not_take_is_refused(spec, fits, wrong, message, tmp_path):
    """Prediction resizes every poster to meta's image_size: one the model cannot take failed
    there with a shape error far from the file, or (transposed, for small_cnn) read every
    poster's rows scrambled without a word."""
    path = tmp_path / "m.npz"
    save_model(path, build_model(spec), {**META, "model": spec, "image_size": fits})
    assert load_model(path)[1]["image_size"] == fits
    save_model(path, build_model(spec), {**META, "model": spec, "image_size": wrong})
    with pytest.raises(CheckpointError,
                       match=rf"m\.npz: 'image_size' {re.escape(str(wrong))} .*{message}"):
        load_model(path)


def test_an_image_size_the_weights_cannot_bound_is_bounded(tmp_path):
    """The label prior takes any image, and small_cnn's weights are the same at any size: a
    poster resized to 10**6 x 10**6 (3 TB) must still be refused; 4096 a side is the most."""
    path = tmp_path / "m.npz"
    huge_cnn = {**TALL_CNN, "kwargs": {**TALL_CNN["kwargs"], "image_size": [10**6, 10**6]}}
    for spec in (BUILDERS[4], huge_cnn):
        save_model(path, build_model(spec), {**META, "model": spec, "image_size": [10**6, 10**6]})
        with pytest.raises(CheckpointError, match=r"m\.npz: 'image_size' must be \[width, "
                                                  r"height\], 1 to 4096 each, found \[1000000, "):
            load_model(path)
    save_model(path, build_model(BUILDERS[4]), {**META, "model": BUILDERS[4],
                                                "image_size": [4096, 1]})
    assert load_model(path)[1]["image_size"] == [4096, 1]


def test_the_label_prior_ignores_the_image(rng):
    prior = LabelPrior([0.5, 0.25])
    np.testing.assert_array_equal(prior(rng.random((3, 7), dtype=np.float32)),
                                  [[0.5, 0.25]] * 3)
    assert prior.num_parameters() == 0


def test_start_at_prior_makes_an_untrained_model_predict_the_prior(rng):
    spec = BUILDERS[0]
    model = build_model(spec)
    for p in model.parameters():
        p.data[:] = 0
    prior = np.array([0.5, 0.1, 0.01, 0.3])
    start_at_prior(model, prior)
    probs = 1 / (1 + np.exp(-model(rng.random((2, 48), dtype=np.float32)).astype(np.float64)))
    np.testing.assert_allclose(probs, [prior] * 2, rtol=1e-5)
    assert len(trainable_parameters(model)) == len(model.parameters())
