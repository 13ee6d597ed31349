"""examples/compare_models.py --quick, end to end on synthetic posters."""

import importlib.util
import json
import sys

import numpy as np
import pytest

from conftest import make_poster_folder
from test_examples import EXAMPLES, run

from nn.data import PosterDataset, train_val_split
from nn.metrics import evaluate
from nn.models import load_model
from nn.trainer import predict_proba

MODELS = ["prior", "paper_mlp", "logistic", "mlp", "cnn", "colour", "features", "ensemble"]
METRICS = ["precision_at_3", "recall_at_3", "micro_f1_at_3", "map", "macro_auc",
           "paper_accuracy", "n_parameters", "train_time_s"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    work = tmp_path_factory.mktemp("compare")
    data = make_poster_folder(work / "posters", n=80, seed=0)
    out = run("compare_models.py", "--data", data, "--quick", "--epochs", 2,
              "--out", work / "run", "--best", work / "best.npz", cwd=work)
    return work, data, out.stdout


def test_every_model_gets_a_row_with_every_metric(compared):
    work, _, stdout = compared
    results = json.loads((work / "run" / "results.json").read_text())
    assert list(results["models"]) == MODELS
    for name, r in results["models"].items():
        assert set(METRICS) <= set(r), name
        assert r["n_posters"] == 20                  # the 25% validation split of 80
    assert results["split"] == {"val_fraction": 0.25, "seed": 0, "n_train": 60, "n_val": 20}
    best = results["best"]
    assert results["models"][best]["map"] == max(r["map"] for r in results["models"].values())
    table = (work / "run" / "results.md").read_text()
    assert f"| {best} (best) |" in table and "| prior |" in table and "| mAP |" in table
    assert "best by validation mAP" in stdout


def test_each_checkpoint_loads_and_predicts_what_the_table_says(compared):
    work, _, _ = compared
    results = json.loads((work / "run" / "results.json").read_text())
    _, val_idx = train_val_split(80, 0.25, seed=0)
    for name, r in results["models"].items():
        model, meta, _ = load_model(r["checkpoint"])
        assert meta["genres"][:2] == ["Action", "Adventure"] and len(meta["train_prior"]) == 25
        assert meta["output"] in ("probabilities", "logits")
        # the validation posters at this model's size, from the cache the script filled
        data = PosterDataset(work / "posters", size=tuple(meta["image_size"]),
                             cache_dir=work / "cache", progress=False)
        probs = predict_proba(model, data.images, val_idx, meta["output"])
        assert probs.shape == (20, 25) and ((0 <= probs) & (probs <= 1)).all()
        assert evaluate(probs, data.y[val_idx])["map"] == pytest.approx(r["map"], abs=1e-6), name


def test_the_best_checkpoint_is_copied_for_predict_poster(compared):
    work, data, _ = compared
    results = json.loads((work / "run" / "results.json").read_text())
    best = (work / "run" / results["best"] / "best.npz").read_bytes()
    assert (work / "best.npz").read_bytes() == best
    poster = next((data / "Images").iterdir())
    out = run("predict_poster.py", poster, "--checkpoint", work / "best.npz", cwd=work)
    assert out.stdout.startswith(f"{poster}: ") and out.stdout.count(",") == 2


def test_evaluate_scores_a_compared_model_on_unseen_posters(compared):
    work, _, _ = compared
    unseen = make_poster_folder(work / "unseen", n=30, seed=5)
    run("evaluate.py", "--checkpoint", work / "run" / "features" / "best.npz", "--data", unseen,
        "--json", work / "eval.json", cwd=work)
    scores = json.loads((work / "eval.json").read_text())
    assert scores["n_posters"]["model"] == 30
    assert np.isfinite(scores["map"]["model"])


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plots_are_written_to_the_run_folder(compared):
    work, _, _ = compared
    for name in ("curves_val_map", "curves_val_auc", "curves_train_loss", "genre_ap", "posters"):
        assert (work / "run" / f"{name}.png").stat().st_size > 1000, name



@pytest.fixture
def compare_models():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import compare_models
        yield compare_models
    finally:
        sys.path.remove(str(EXAMPLES))


def test_heads_train_on_features_computed_once_and_average_in_one_checkpoint(
        compare_models, tmp_path, monkeypatch):
    """Plan.heads: models from seeds 0, 1, 2 trained on the same precomputed features (the
    extractor runs once over the posters and once over the flipped training posters), saved
    as one Ensemble checkpoint that takes raw posters."""
    data = make_poster_folder(tmp_path / "posters", n=40, seed=0)
    args = compare_models.parse_args(["--data", str(data), "--cache-dir", str(tmp_path / "c")])
    posters = compare_models.Posters(args)
    calls = []
    precompute = compare_models.precompute
    monkeypatch.setattr(compare_models, "precompute",
                        lambda *a, **k: calls.append(k) or precompute(*a, **k))
    plan = compare_models.Plan(
        "f", "feature_mlp", 16, {"features": {"hog_cell": 8}, "hidden": [8], "dropout": 0.5,
                                 "kmeans": {"patch": 4, "stride": 2, "n_centroids": 8}},
        standardize="features", epochs=2, max_shift=0, precompute=True, heads=3)
    r = compare_models.train(plan, posters, tmp_path / "run")
    assert calls == [{}, {"flip": True}] and len(r["best_epoch"]) == 3
    model, meta, _ = load_model(r["checkpoint"])
    assert meta["model"]["name"] == "ensemble" and meta["output"] == "probabilities"
    dictionaries = [m[0].branches[1].centroids.data for m in model.members]
    heads = [m[2].weight.data for m in model.members]
    assert all(np.array_equal(d, dictionaries[0]) for d in dictionaries)   # one extractor
    assert not np.array_equal(heads[0], heads[1])                          # its own head
    images = posters.at(16).images
    np.testing.assert_array_equal(predict_proba(model, images, posters.val_idx), r["probs"])
    # and, computed apart from the ensemble: the mean of each head's own checkpoint
    per_head = [predict_proba(load_model(tmp_path / "run" / "f" / f"head{i}" / "best.npz")[0],
                              images, posters.val_idx, "logits") for i in range(3)]
    np.testing.assert_allclose(np.mean(per_head, axis=0), r["probs"], rtol=1e-6, atol=1e-7)
