"""The training loop on synthetic posters: learning, checkpoints, resume, divergence, Ctrl-C."""

import os
import signal

import numpy as np
import pytest

import nn
from nn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nn.data import DataLoader, PosterDataset, train_val_split
from nn.augment import RandomFlipShift
from nn.models import feature_extractor, feature_mlp, load_model, paper_mlp, trainable_parameters
from nn.preprocess import standardize_stats
from nn.fixed_features import FeatureLoader, precompute, random_flips, split_fixed, with_flips
from nn.trainer import DivergedError, Trainer, predict_proba
from conftest import make_poster_folder

SIZE = 16
OPTIMIZERS = {"momentum": lambda params, lr: nn.SGD(params, lr=lr, momentum=0.9),
              "sgd": lambda params, lr: nn.SGD(params, lr=lr),
              "adam": lambda params, lr: nn.Adam(params, lr=lr / 100)}


@pytest.fixture(scope="module")
def posters(tmp_path_factory):
    root = make_poster_folder(tmp_path_factory.mktemp("posters"), n=90)
    return PosterDataset(root, size=SIZE, cache_dir=root / "cache", progress=False)


def make_trainer(data, out_dir, lr=0.5, on_epoch=None, transform=None, optimizer="momentum"):
    train_idx, val_idx = train_val_split(len(data), 0.25, seed=0)
    spec = {"name": "paper_mlp", "kwargs": {"input_size": SIZE * SIZE * 3,
                                            "hidden": [32, 16, 16, 16], "n_out": 25}}
    model = paper_mlp(**spec["kwargs"], rng=0)
    loader = DataLoader(data.images, data.y, train_idx, batch_size=8, seed=0)
    prior = data.y[train_idx].mean(axis=0)
    meta = {"model": spec, "output": "probabilities", "genres": data.genres,
            "image_size": [SIZE, SIZE], "train_prior": prior.tolist()}
    return Trainer(model, nn.BCELoss(), OPTIMIZERS[optimizer](model.parameters(), lr),
                   loader, data.images, data.y, val_idx, out_dir, meta, prior,
                   on_epoch=on_epoch, transform=transform, progress=False)


def weights(model):
    return [p.data.copy() for p in model.parameters()]


def test_training_learns_the_synthetic_genres_and_beats_the_prior(posters, tmp_path):
    lines = []
    trainer = make_trainer(posters, tmp_path, on_epoch=lambda *a: lines.append(a))
    state = trainer.fit(12)
    first, last = state.history[0], state.history[-1]
    assert last["train_loss"] < first["train_loss"]
    _, _, val, prior = lines[-1]
    assert val["map"] > prior["map"] + 0.2 and val["macro_auc"] > 0.7
    assert (tmp_path / "best.npz").exists() and (tmp_path / "last.npz").exists()
    # best.npz rebuilds the model and gives the same predictions as the model in memory
    model, meta, _ = load_model(tmp_path / "best.npz")
    assert meta["epoch"] == state.best_epoch
    if state.best_epoch == state.epoch:
        np.testing.assert_array_equal(predict_proba(model, posters.images),
                                      predict_proba(trainer.model, posters.images))


def test_predict_proba_keeps_the_order_of_the_indices(posters):
    model = paper_mlp(SIZE * SIZE * 3, (8, 8, 8, 8), 25, rng=0)
    idx = np.array([5, 1, 7, 3, 2])
    together = predict_proba(model, posters.images, idx, batch_size=2)
    one_by_one = np.concatenate([predict_proba(model, posters.images, [i]) for i in idx])
    # BLAS may round differently for another batch size: equal up to float32 rounding
    np.testing.assert_allclose(together, one_by_one, rtol=1e-6, atol=1e-7)


def test_interrupted_and_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(posters,
                                                                                 tmp_path):
    straight = make_trainer(posters, tmp_path / "straight")
    straight.fit(3)

    calls = {"n": 0}

    def ctrl_c_at_batch_11(x, rng):
        calls["n"] += 1
        if calls["n"] == 11:  # mid-epoch 2: a real SIGINT, handled like a user's Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return x

    interrupted = make_trainer(posters, tmp_path / "run", transform=ctrl_c_at_batch_11)
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        interrupted.fit(3)
    assert interrupted.state.epoch == 1 and interrupted.state.batch == 2

    resumed = make_trainer(posters, tmp_path / "run")
    resumed.resume(tmp_path / "run" / "last.npz")
    resumed.fit(3)
    for a, b in zip(weights(straight.model), weights(resumed.model)):
        assert np.array_equal(a, b)
    assert straight.state.history == resumed.state.history


def test_same_seed_same_losses_and_weights(posters, tmp_path):
    a, b = make_trainer(posters, tmp_path / "a"), make_trainer(posters, tmp_path / "b")
    assert a.fit(2).history == b.fit(2).history
    assert all(np.array_equal(x, y) for x, y in zip(weights(a.model), weights(b.model)))


def test_a_diverging_loss_stops_at_once_and_keeps_the_last_good_checkpoint(posters, tmp_path):
    trainer = make_trainer(posters, tmp_path)
    trainer.fit(1)
    good = (tmp_path / "last.npz").read_bytes()
    trainer.optimizer.lr = 1e38  # float32 weights overflow to inf, then inf - inf = NaN
    with pytest.raises(DivergedError, match=r"epoch 2, batch \d+.*lower learning rate"):
        with np.errstate(all="ignore"):  # the blow-up itself overflows, on purpose
            trainer.fit(3)
    assert (tmp_path / "last.npz").read_bytes() == good


def test_resume_refuses_a_checkpoint_of_another_model(posters, tmp_path):
    trainer = make_trainer(posters, tmp_path)
    trainer.fit(1)
    other = make_trainer(posters, tmp_path / "other")
    other.meta = {**other.meta, "model": {**other.meta["model"], "kwargs": {
        **other.meta["model"]["kwargs"], "hidden": [8, 8, 8, 8]}}}
    with pytest.raises(CheckpointError, match="this run trains"):
        other.resume(tmp_path / "last.npz")


@pytest.mark.parametrize("saved, resumed, message", [
    ("momentum", "sgd", r"SGD: state_dict mismatch: missing \[\], unexpected \['velocity\.0'"),
    ("sgd", "momentum", r"SGD: state_dict mismatch: missing \['velocity\.0', 'velocity\.1'"),
    ("momentum", "adam", r"Adam: .*missing \['m\.0'.*unexpected \['velocity\.0'"),
    ("adam", "momentum", r"SGD: .*missing \['velocity\.0'.*unexpected \['m\.0'"),
], ids=["momentum into plain SGD", "plain SGD into momentum", "momentum into Adam",
        "Adam into momentum"])
def test_resume_refuses_the_state_of_another_optimizer(posters, tmp_path, saved, resumed,
                                                       message):
    """A momentum run resumed with plain SGD lost its velocities without a word; the other
    ways round were a bare KeyError, after the model's weights had been overwritten."""
    make_trainer(posters, tmp_path, optimizer=saved).fit(1)
    other = make_trainer(posters, tmp_path / "other", optimizer=resumed)
    before = weights(other.model)
    with pytest.raises(CheckpointError, match=r"last\.npz: the optimizer state \(optim\.\*\) "
                                              r"does not fit this run's " + message):
        other.resume(tmp_path / "last.npz")
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(other.model)))
    assert other.state.epoch == 0


@pytest.mark.parametrize("value, message", [
    (lambda v: v[:1], r"float32 \(1, 32\) does not match the optimizer's float32 \(768, 32\)"),
    (lambda v: v.astype(np.float64), r"float64 \(768, 32\) .* float32 \(768, 32\)"),
], ids=["broadcast", "cast"])
def test_resume_refuses_an_optimizer_array_of_the_wrong_shape_or_dtype(posters, tmp_path, value,
                                                                       message):
    """Both were copied in without a word: one row broadcast over all 768, or float64 cast."""
    make_trainer(posters, tmp_path).fit(1)
    arrays, meta = load_checkpoint(tmp_path / "last.npz")
    arrays["optim.velocity.0"] = value(arrays["optim.velocity.0"])
    save_checkpoint(tmp_path / "last.npz", arrays, meta)
    with pytest.raises(CheckpointError, match=r"last\.npz: .* SGD: velocity\.0: " + message):
        make_trainer(posters, tmp_path / "other").resume(tmp_path / "last.npz")


def test_resume_refuses_a_damaged_loop_state_before_changing_anything(posters, tmp_path):
    make_trainer(posters, tmp_path).fit(1)
    arrays, meta = load_checkpoint(tmp_path / "last.npz")
    save_checkpoint(tmp_path / "last.npz", arrays, {**meta, "loop": {**meta["loop"], "epoh": 3}})
    other = make_trainer(posters, tmp_path / "other")
    before = weights(other.model)
    with pytest.raises(CheckpointError, match=r"last\.npz: its loop state is damaged: .*epoh"):
        other.resume(tmp_path / "last.npz")
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(other.model)))


def feature_trainer(data, out_dir, precomputed):
    """A feature_mlp (colour features and k-means at SIZE, dropout) trained on random flips:
    on images, or (precomputed) its head on features computed once, as compare_models does."""
    train_idx, val_idx = train_val_split(len(data), 0.25, seed=0)
    kwargs = {"image_size": [SIZE, SIZE], "features": {"hog_cell": 8},
              "kmeans": {"patch": 4, "stride": 2, "n_centroids": 8, "grid": 2}}
    extract = feature_extractor(kwargs["image_size"], kwargs["features"], kwargs["kmeans"])
    extract.branches[1].fit(data.images[train_idx], n_patches=2000)
    mean, std = standardize_stats(data.images, train_idx, transform=extract)
    spec = {"name": "feature_mlp", "kwargs": {**kwargs, "mean": mean, "std": std,
                                              "hidden": [16], "dropout": 0.5, "n_out": 25}}
    model = feature_mlp(**spec["kwargs"])
    model[0].load_state_dict(extract.state_dict())
    optimizer = nn.Adam(trainable_parameters(model), lr=3e-3)
    loader = DataLoader(data.images, data.y, train_idx, batch_size=8)
    trained, inputs, transform = model, data.images, RandomFlipShift((SIZE, SIZE), 0)
    if precomputed:
        fixed, trained = split_fixed(model)
        inputs = precompute(fixed, data.images, np.arange(len(data)))
        flipped = precompute(fixed, data.images, train_idx, flip=True)
        loader = FeatureLoader(with_flips(inputs, flipped), data.y, train_idx, batch_size=8)
        transform = random_flips
    prior = data.y[train_idx].mean(axis=0)
    meta = {"model": spec, "output": "logits", "genres": data.genres,
            "image_size": [SIZE, SIZE], "train_prior": prior.tolist()}
    return Trainer(trained, nn.BCEWithLogitsLoss(), optimizer, loader, inputs, data.y, val_idx,
                   out_dir, meta, prior, transform=transform, progress=False,
                   checkpoint_model=model)


def test_split_fixed_cuts_off_the_feature_extractor_and_standardize(posters, tmp_path):
    model = feature_trainer(posters, tmp_path, precomputed=False).model
    fixed, head = split_fixed(model)
    assert len(fixed) == 2 and list(head) == list(model)[2:]   # Linear, ReLU, Dropout, Linear
    assert len(split_fixed(paper_mlp(12, (4,), 25))[0]) == 0   # a Linear is learned


def test_feature_loader_batches_like_the_data_loader(posters):
    idx = np.arange(3, 70)
    images = DataLoader(posters.images, posters.y, idx, batch_size=8, seed=3)
    ids = np.arange(len(posters))[:, None]  # each row's index, to see which rows come
    rows = FeatureLoader(ids, posters.y, idx, batch_size=8, seed=3)
    images.set_epoch(2), rows.set_epoch(2)
    assert len(images) == len(rows)
    for (x, y), (i, y_rows) in zip(images, rows):
        expected = posters.images[i[:, 0]].reshape(len(x), -1) / np.float32(255)
        np.testing.assert_array_equal(x, expected)
        np.testing.assert_array_equal(y, y_rows)


def test_training_on_precomputed_features_equals_training_on_images(posters, tmp_path):
    """Same seed, same flips, same dropout: the same weights, up to float32 rounding (the
    k-means features of a poster round a little differently in another batch), and the same
    checkpoint, which takes raw posters."""
    on_images = feature_trainer(posters, tmp_path / "images", precomputed=False)
    on_features = feature_trainer(posters, tmp_path / "features", precomputed=True)
    a, b = on_images.fit(4), on_features.fit(4)
    assert a.best_epoch == b.best_epoch
    for x, y in zip(weights(on_images.checkpoint_model), weights(on_features.checkpoint_model)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    for h, k in zip(a.history, b.history):
        assert h["train_loss"] == pytest.approx(k["train_loss"], rel=1e-5)
        assert h["val"]["map"] == pytest.approx(k["val"]["map"], abs=1e-6)
    model, meta, _ = load_model(tmp_path / "features" / "best.npz")
    assert meta["model"]["name"] == "feature_mlp"
    expected, _, _ = load_model(tmp_path / "images" / "best.npz")
    np.testing.assert_allclose(predict_proba(model, posters.images, output="logits"),
                               predict_proba(expected, posters.images, output="logits"),
                               rtol=1e-4, atol=1e-5)
