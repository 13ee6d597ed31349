"""Model checkpoints: rebuilt from JSON, validated before use, never unpickled."""

import numpy as np
import pytest

from nn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nn.models import build_model, load_model, paper_mlp, save_model

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
