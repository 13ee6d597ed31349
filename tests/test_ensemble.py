import numpy as np
import pytest

import nn
from nn.ensemble import Ensemble
from nn.models import build_model, load_model, save_model


def test_the_ensemble_averages_its_members_probabilities(rng):
    logits = nn.Sequential(nn.Linear(4, 3, rng=0))
    probs = nn.Sequential(nn.Linear(4, 3, rng=1), nn.Sigmoid())
    x = rng.random((5, 4), dtype=np.float32)
    both = Ensemble([logits, probs], ["logits", "probabilities"])
    np.testing.assert_allclose(both(x), (nn.sigmoid(logits(x)) + probs(x)) / 2, rtol=1e-6)
    with pytest.raises(RuntimeError, match="train each member"):
        both.backward(np.ones((5, 3)))


def test_an_ensemble_checkpoint_holds_every_member(rng, tmp_path):
    member = {"name": "mlp", "kwargs": {"input_size": 12, "mean": [0.5] * 3, "std": [0.2] * 3,
                                        "hidden": [4], "n_out": 3}}
    spec = {"name": "ensemble", "kwargs": {"members": [{"model": member, "output": "logits"},
                                                       {"model": member, "output": "logits"}]}}
    model = build_model(spec)
    for slot, seed in zip(model.members, (1, 2)):
        slot.load_state_dict(build_model({**member, "kwargs": {**member["kwargs"],
                                                               "rng": seed}}).state_dict())
    meta = {"model": spec, "output": "probabilities", "genres": ["a", "b", "c"],
            "image_size": [2, 2]}
    save_model(tmp_path / "e.npz", model, meta)
    loaded, _, _ = load_model(tmp_path / "e.npz")
    x = rng.random((3, 12), dtype=np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))
    assert not np.array_equal(loaded.members[0](x), loaded.members[1](x))


def test_an_ensemble_needs_an_output_kind_per_member():
    with pytest.raises(ValueError, match="one output kind per member"):
        Ensemble([nn.Linear(2, 2)], [])
