import numpy as np
import pytest

from nn.kmeans import KMeansFeatures, normalise_patches
from nn.models import build_model, feature_mlp, load_model, save_model, trainable_parameters


def stripes(rng, n=40, size=12):
    """uint8 images of horizontal or vertical stripes with noise: two kinds of patches."""
    images = rng.integers(0, 40, (n, size, size, 3)).astype(np.uint8)
    images[: n // 2, ::3] += 200
    images[n // 2:, :, ::3] += 200
    return images


def test_fit_finds_a_whitening_and_centroids(rng):
    layer = KMeansFeatures((12, 12), patch=3, stride=1, n_centroids=8, grid=2)
    layer.fit(stripes(rng), rng=0, n_patches=5000)
    d = 3 * 3 * 3
    assert layer.centroids.data.shape == (8, d) and layer.whiten.data.shape == (d, d)
    np.testing.assert_allclose(layer.whiten.data, layer.whiten.data.T, atol=1e-5)
    assert np.isfinite(layer.centroids.data).all()
    assert len(np.unique(layer.centroids.data.round(4), axis=0)) == 8
    # whitening whitens: the whitened patches' covariance has eigenvalues l / (l + eps) <= 1,
    # the largest near 1 (the identity matrix would leave the raw variances, far from that)
    from nn.kmeans import WHITEN_EPS, _kmeans, _zca
    v = normalise_patches(stripes(rng).reshape(-1, 3 * 3 * 3)[:2000] / np.float32(255))
    v = v - v.mean(axis=0)
    cov = np.linalg.eigvalsh(np.cov(v @ _zca(v), rowvar=False))
    raw = np.linalg.eigvalsh(np.cov(v, rowvar=False))
    np.testing.assert_allclose(cov, raw / (raw + WHITEN_EPS), rtol=1e-3, atol=1e-4)
    assert cov.max() > 0.5
    # Lloyd's iterations find two well-separated blobs' centres (their means, within ~0.01)
    # from random starting rows (each ~0.1 away from its blob's centre)
    blobs = np.concatenate([rng.normal(0, 0.1, (200, 2)), rng.normal(5, 0.1, (200, 2))])
    found = _kmeans(blobs.astype(np.float32), 2, 5, np.random.default_rng(1))
    np.testing.assert_allclose(found[np.argsort(found[:, 0])], [[0, 0], [5, 5]], atol=0.03)


def test_forward_is_the_triangle_code_max_pooled_per_cell(rng):
    layer = KMeansFeatures((7, 6), patch=3, stride=2, n_centroids=5, grid=2)
    layer.fit(stripes(rng, size=7)[:, :, :6], rng=0, n_patches=2000)
    x = rng.random((2, 7 * 6 * 3)).astype(np.float32)
    y = layer(x)
    assert y.shape == (2, layer.n_features) == (2, 2 * 2 * 5)
    # the definition, one patch at a time: positions (0, 2, 4) x (0, 2) -> cells rows 0|1,2
    images = x.reshape(2, 7, 6, 3)
    expected = np.zeros((2, 4, 5))
    for n in range(2):
        for i, r in enumerate((0, 2, 4)):
            for j, c in enumerate((0, 2)):
                v = normalise_patches(images[n, r:r + 3, c:c + 3].reshape(1, -1))
                z = (v - layer.patch_mean.data) @ layer.whiten.data
                d = np.linalg.norm(z - layer.centroids.data, axis=1)
                code = np.maximum(d.mean() - d, 0)
                cell = (i * 2 // 3) * 2 + j
                expected[n, cell] = np.maximum(expected[n, cell], code)
    np.testing.assert_allclose(y, expected.reshape(2, -1), rtol=1e-4, atol=1e-4)


def test_the_dictionary_is_saved_but_never_trained(rng, tmp_path):
    kwargs = {"image_size": [12, 12], "mean": [0.0] * 16, "std": [1.0] * 16,
              "kmeans": {"patch": 4, "stride": 4, "n_centroids": 4, "grid": 2}, "n_out": 3}
    model = feature_mlp(**kwargs)
    model[0].fit(stripes(rng), rng=0, n_patches=2000)
    trainable = trainable_parameters(model)
    assert len(trainable) == 2 and not any(p is model[0].centroids for p in trainable)
    meta = {"model": {"name": "feature_mlp", "kwargs": kwargs}, "output": "logits",
            "genres": ["a", "b", "c"], "image_size": [12, 12]}
    save_model(tmp_path / "m.npz", model, meta)
    loaded, _, _ = load_model(tmp_path / "m.npz")
    x = stripes(rng, n=4).reshape(4, -1) / np.float32(255)
    np.testing.assert_array_equal(loaded(x), model(x))
    assert not np.array_equal(build_model(meta["model"])[0].centroids.data,
                              model[0].centroids.data)


def test_kmeans_features_have_no_gradient(rng):
    layer = KMeansFeatures((12, 12), patch=4, stride=4, n_centroids=4)
    layer(rng.random((1, 12 * 12 * 3)).astype(np.float32))
    with pytest.raises(RuntimeError, match="first layer"):
        layer.backward(np.ones((1, layer.n_features)))
