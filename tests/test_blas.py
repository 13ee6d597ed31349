import tracemalloc

import numpy as np
import pytest

import nn.blas as blas
from nn.blas import add_product


@pytest.fixture(params=["blas", "numpy"])
def path(request, monkeypatch):
    """Run a test through numpy's OpenBLAS and through the numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(blas, "_gemm", None)
    elif not blas.using_blas():
        pytest.skip("this numpy carries no scipy-openblas to call (the fallback is tested)")
    return request.param


def reference(c, a, b, alpha, beta):
    return beta * c.astype(np.float64) + alpha * (a.astype(np.float64) @ b.astype(np.float64))


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-13)])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
def test_add_product_matches_the_formula(path, rng, dtype, rtol, a_transposed, b_transposed):
    m, k, n = 37, 5, 11
    a = rng.standard_normal((k, m)).T if a_transposed else rng.standard_normal((m, k))
    b = rng.standard_normal((n, k)).T if b_transposed else rng.standard_normal((k, n))
    a, b = a.astype(dtype, order="K"), b.astype(dtype, order="K")
    c = rng.standard_normal((m, n)).astype(dtype)
    expected = reference(c, a, b, -0.05, 0.99)
    add_product(c, a, b, alpha=-0.05, beta=0.99)
    assert c.dtype == dtype
    np.testing.assert_allclose(c, expected, rtol=rtol, atol=rtol)


def test_add_product_on_strided_views(path, rng):
    """Slices of bigger arrays: leading dimensions larger than the rows they hold."""
    big_c = rng.standard_normal((50, 30)).astype(np.float32)
    c = big_c[5:45, 3:20]
    a = rng.standard_normal((40, 60)).astype(np.float32)[:, 10:17]
    b = rng.standard_normal((9, 30)).astype(np.float32)[1:8, 5:22]
    untouched = big_c.copy()
    expected = reference(c, a, b, 0.5, 1.0)
    add_product(c, a, b, alpha=0.5)
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5)
    untouched[5:45, 3:20] = big_c[5:45, 3:20]
    assert np.array_equal(big_c, untouched)   # nothing outside the view was written


def test_c_that_is_also_a_or_b_is_read_before_it_is_written(path, rng, monkeypatch):
    """In row blocks of 2: the fallback must not read rows of b it has already updated."""
    monkeypatch.setattr(blas, "_BLOCK_BYTES", 2 * 6 * 8)
    square = rng.standard_normal((6, 6))
    expected = reference(square, square, square, 1.0, 1.0)
    add_product(square, square, square)
    np.testing.assert_allclose(square, expected, rtol=1e-12)


def test_layouts_gemm_cannot_take_still_give_the_right_answer(rng):
    """Every-other column of c and a reversed a go through numpy."""
    c = rng.standard_normal((20, 16)).astype(np.float32)
    view = c[:, ::2]
    a = rng.standard_normal((20, 3)).astype(np.float32)[::-1]
    b = rng.standard_normal((3, 8)).astype(np.float32)
    expected = reference(view, a, b, 1.0, 1.0)
    add_product(view, a, b)
    np.testing.assert_allclose(c[:, ::2], expected, rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_refused(rng):
    c = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="do not match"):
        add_product(c, np.zeros((4, 2), np.float32), np.zeros((5, 3), np.float32))
    with pytest.raises(TypeError, match="dtypes differ"):
        add_product(c, np.zeros((4, 2)), np.zeros((2, 3), np.float32))
    c.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        add_product(c, np.zeros((4, 2), np.float32), np.zeros((2, 3), np.float32))


def test_numpy_wheels_run_through_their_own_openblas():
    """numpy's wheels carry scipy-openblas; losing it would silently make SGD ~2x slower."""
    try:
        name = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except (TypeError, KeyError):
        pytest.skip("this numpy does not report its BLAS")
    if name != "scipy-openblas":
        pytest.skip(f"numpy is built against {name}, not the wheel's scipy-openblas")
    assert blas.using_blas()


def test_the_fallback_allocates_no_full_size_temporary(rng, monkeypatch):
    monkeypatch.setattr(blas, "_gemm", None)
    c = np.zeros((20_000, 256), np.float32)              # 20 MB
    x = rng.random((8, 20_000), dtype=np.float32)
    g = rng.random((8, 256), dtype=np.float32)
    tracemalloc.start()
    add_product(c, x.T, g, alpha=-0.05)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < c.nbytes / 4, f"allocated {peak} bytes"
    np.testing.assert_allclose(c, -0.05 * (x.T @ g), rtol=1e-5, atol=1e-6)
