import numpy as np

from nn.augment import RandomFlipShift


def test_without_shift_each_image_is_kept_or_mirrored(rng):
    x = rng.random((50, 4 * 5 * 3)).astype(np.float32)
    out = RandomFlipShift((4, 5), max_shift=0)(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    images, result = x.reshape(50, 4, 5, 3), out.reshape(50, 4, 5, 3)
    kept = [np.array_equal(r, i) for r, i in zip(result, images)]
    mirrored = [np.array_equal(r, i[:, ::-1]) for r, i in zip(result, images)]
    assert all(k or m for k, m in zip(kept, mirrored))
    assert 10 < sum(mirrored) < 40


def test_a_shift_moves_the_image_and_repeats_its_edge():
    image = np.arange(6 * 6 * 3, dtype=np.float32).reshape(1, 6, 6, 3)
    shift = RandomFlipShift((6, 6), max_shift=2, flip=False)
    padded = np.pad(image[0], ((2, 2), (2, 2), (0, 0)), mode="edge")
    offsets = [(dy, dx) for dy in range(5) for dx in range(5)]
    seen = set()
    for seed in range(20):
        out = shift(image.reshape(1, -1), np.random.default_rng(seed)).reshape(6, 6, 3)
        windows = [padded[dy:dy + 6, dx:dx + 6] for dy, dx in offsets]
        assert any(np.array_equal(out, w) for w in windows)
        seen.update(o for o, w in zip(offsets, windows) if np.array_equal(out, w))
    # (2, 2) is the image unshifted: an identity transform must not pass, and some shift
    # must reach into the repeated edge
    assert len(seen - {(2, 2)}) >= 3
    assert seen & {(0, 0), (0, 4), (4, 0), (4, 4), (0, 2), (2, 0), (4, 2), (2, 4)}


def test_same_rng_same_augmentation(rng):
    x = rng.random((8, 6 * 6 * 3)).astype(np.float32)
    shift = RandomFlipShift((6, 6), max_shift=2)
    np.testing.assert_array_equal(shift(x, np.random.default_rng(3)),
                                  shift(x, np.random.default_rng(3)))
    # and it does augment: another seed, another batch, and not the input
    assert not np.array_equal(shift(x, np.random.default_rng(3)), x)
    assert not np.array_equal(shift(x, np.random.default_rng(3)),
                              shift(x, np.random.default_rng(4)))
