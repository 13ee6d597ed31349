import re
import os
import tracemalloc

import numpy as np
import pytest

import nn
from nn.models import trainable_parameters


def param(values, grad):
    p = nn.Parameter(np.array(values, dtype=np.float64))
    p.add_grad(np.array(grad, dtype=np.float64))
    return p


def test_sgd_plain_step_by_hand():
    p = param([1.0, -2.0], [0.5, 0.25])
    nn.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -2.0 - 0.025], rtol=1e-15)


def test_sgd_momentum_and_weight_decay_by_hand():
    p = param([1.0], [0.5])
    opt = nn.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step()  # g = 0.5 + 0.01*1 = 0.51; v = 0.51; p = 1 - 0.051 = 0.949
    np.testing.assert_allclose(p.data, [0.949], rtol=1e-15)
    opt.step()  # g = 0.5 + 0.00949 = 0.50949; v = 0.9*0.51 + 0.50949 = 0.96849
    #             p = 0.949 - 0.096849
    np.testing.assert_allclose(p.data, [0.852151], rtol=1e-14)
    np.testing.assert_allclose(opt.velocity[0], [0.96849], rtol=1e-14)


def test_adam_two_steps_by_hand():
    p = param([1.0], [0.5])
    opt = nn.Adam([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    opt.step()  # m = .05, v = .00025; m^ = .5, v^ = .25; p = 1 - .1 * .5 / (.5 + 1e-8)
    expected = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
    np.testing.assert_allclose(p.data, [expected], rtol=1e-15)
    p.zero_grad()
    p.add_grad(np.array([-1.0]))
    opt.step()
    m = 0.9 * 0.05 + 0.1 * -1.0                     # -0.055
    v = 0.999 * 0.00025 + 0.001 * 1.0               # 0.00124975
    m_hat, v_hat = m / (1 - 0.9 ** 2), v / (1 - 0.999 ** 2)
    np.testing.assert_allclose(p.data, [expected - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)],
                               rtol=1e-12)


@pytest.mark.parametrize("make", [
    lambda ps: nn.SGD(ps, lr=0.05),
    lambda ps: nn.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda ps: nn.Adam(ps, lr=1e-3, weight_decay=1e-4)])
def test_blocked_parallel_update_equals_the_whole_array_formula(rng, make):
    """A 16 MB parameter goes through the blocked, threaded path; a small one does not."""
    big = rng.standard_normal((4096, 1024)).astype(np.float32)
    g = rng.standard_normal(big.shape).astype(np.float32)
    p_big, p_ref = nn.Parameter(big.copy()), nn.Parameter(big.copy())
    for p in (p_big, p_ref):
        p.add_grad(g)
    opt_big = make([p_big])
    opt_ref = make([p_ref])
    import nn.optim as optim
    for _ in range(2):
        opt_big.step()
        saved, optim._BLOCK_BYTES = optim._BLOCK_BYTES, 1 << 40  # one block: the plain formula
        try:
            opt_ref.step()
        finally:
            optim._BLOCK_BYTES = saved
    assert p_big.data.dtype == np.float32
    assert np.array_equal(p_big.data, p_ref.data)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_step_on_a_large_layer_allocates_no_full_size_temporary(rng, momentum):
    layer = nn.Linear(20_000, 256, rng=0)                # a 20 MB weight
    x = rng.random((8, 20_000), dtype=np.float32)
    opt = nn.SGD(layer.parameters(), lr=0.05, momentum=momentum)
    layer(x)
    layer.backward(np.ones((8, 256), np.float32))
    tracemalloc.start()
    opt.step()
    opt.zero_grad()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < layer.weight.data.nbytes / 4, f"step allocated {peak} bytes"


def test_zero_grad_then_backward_writes_in_place(rng):
    layer = nn.Linear(20_000, 256, rng=0)
    x = rng.random((8, 20_000), dtype=np.float32)
    layer(x)
    layer.backward(np.ones((8, 256), np.float32))
    buffer = layer.weight.grad
    layer.zero_grad()
    layer(x)
    tracemalloc.start()
    layer.backward(np.ones((8, 256), np.float32))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert layer.weight.grad is buffer and peak < buffer.nbytes / 4


def test_sgd_drives_a_small_multilabel_problem_to_near_zero_loss(rng):
    x = rng.standard_normal((64, 10)).astype(np.float32)
    w_true = rng.standard_normal((10, 5)).astype(np.float32)
    y = (x @ w_true > 0).astype(np.float32)
    model = nn.Sequential(nn.Linear(10, 32, rng=0), nn.ReLU(), nn.Linear(32, 5, rng=1))
    loss_fn = nn.BCEWithLogitsLoss()
    opt = nn.SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for _ in range(300):
        losses.append(loss_fn(model(x), y))
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
    assert losses[0] > 0.5 and losses[-1] < 0.02, losses[::50]


def test_no_parameters_is_a_clear_error():
    with pytest.raises(ValueError, match="no parameters"):
        nn.SGD([], lr=0.1)


def test_state_dict_roundtrip_resumes_identically(rng):
    def run(steps, opt_state=None, data=None):
        p = nn.Parameter(rng_data.copy() if data is None else data.copy())
        opt = nn.Adam([p], lr=0.01) if kind == "adam" else nn.SGD([p], lr=0.1, momentum=0.9)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        for g in steps:
            p.zero_grad()
            p.add_grad(g)
            opt.step()
        return p.data, {k: np.array(v) for k, v in opt.state_dict().items()}

    rng_data = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(6)]
    for kind in ("adam", "sgd"):
        straight, _ = run(grads)
        half, state = run(grads[:3])
        resumed, _ = run(grads[3:], state, half)
        assert np.array_equal(straight, resumed)


OPTIMIZERS = {"sgd": lambda ps: nn.SGD(ps, lr=0.1),
              "momentum": lambda ps: nn.SGD(ps, lr=0.1, momentum=0.9),
              "adam": lambda ps: nn.Adam(ps, lr=0.01)}


def _stepped(kind, rng):
    """An optimizer of that kind over two float32 parameters, (3, 2) and (2,), after one step:
    its state differs from a fresh one's, so a partial load would show."""
    params = [nn.Parameter(rng.standard_normal(shape).astype(np.float32)) for shape in [(3, 2), 2]]
    opt = OPTIMIZERS[kind](params)
    for p in params:
        p.add_grad(rng.standard_normal(p.data.shape).astype(np.float32))
    opt.step()
    return opt


def _state(opt):
    return {k: np.array(v) for k, v in opt.state_dict().items()}


@pytest.mark.parametrize("saved, loaded, message", [
    ("momentum", "sgd", r"missing \[\], unexpected \['velocity\.0', 'velocity\.1'\]"),
    ("sgd", "momentum", r"missing \['velocity\.0', 'velocity\.1'\], unexpected \[\]"),
    ("adam", "sgd", r"missing \[\], unexpected \['m\.0', 'm\.1', 't', 'v\.0', 'v\.1'\]"),
    ("adam", "momentum", r"missing \['velocity\.0', 'velocity\.1'\], unexpected \['m\.0'"),
    ("momentum", "adam", r"missing \['m\.0', 'm\.1', 't', 'v\.0', 'v\.1'\], unexpected \['vel"),
], ids=["momentum into plain SGD", "plain SGD into momentum", "Adam into plain SGD",
        "Adam into momentum", "momentum into Adam"])
def test_load_state_dict_refuses_the_state_of_another_optimizer(rng, saved, loaded, message):
    """Momentum's velocities or Adam's moments into plain SGD were dropped without a word; the
    other cases were a bare KeyError('velocity.0') or KeyError('t')."""
    opt = _stepped(loaded, rng)
    before = _state(opt)
    with pytest.raises(KeyError, match="state_dict mismatch: " + message):
        opt.load_state_dict(_state(_stepped(saved, rng)))
    assert all(np.array_equal(before[k], v) for k, v in _state(opt).items())


@pytest.mark.parametrize("kind, name, value, message", [
    ("momentum", "velocity.0", np.ones((1, 2), np.float32),
     r"float32 \(1, 2\) .* float32 \(3, 2\)"),
    ("momentum", "velocity.1", np.ones(2), r"float64 \(2,\) .* float32 \(2,\)"),
    ("adam", "t", np.array(2.7), r"float64 \(\) .* int64 \(\)"),
    ("adam", "v.1", np.ones((2, 1), np.float32), r"float32 \(2, 1\) .* float32 \(2,\)"),
], ids=["broadcast", "cast", "float step count", "extra axis"])
def test_load_state_dict_refuses_a_wrong_shape_or_dtype_and_changes_nothing(rng, kind, name,
                                                                            value, message):
    """Each was copied in without a word (broadcast, cast to float32, t rounded down) or, for
    Adam, failed after t and the first moments had already been overwritten."""
    opt = _stepped(kind, rng)
    before = _state(opt)
    state = {**_state(_stepped(kind, rng)), name: value}
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}: {message}"):
        opt.load_state_dict(state)
    assert all(np.array_equal(before[k], v) for k, v in _state(opt).items())


torch = pytest.importorskip("torch", reason="torch not installed (pip install -e .[torch])")


@pytest.mark.parametrize("kind", ["sgd", "sgd_momentum_wd", "adam", "adam_wd"])
def test_optimizers_equal_torch_float64(rng, kind):
    data = rng.standard_normal((6, 4))
    grads = [rng.standard_normal((6, 4)) for _ in range(5)]
    p = nn.Parameter(data.copy())
    tp = torch.nn.Parameter(torch.tensor(data))
    ours, theirs = {
        "sgd": (nn.SGD([p], lr=0.05), torch.optim.SGD([tp], lr=0.05)),
        "sgd_momentum_wd": (nn.SGD([p], lr=0.05, momentum=0.9, weight_decay=0.01),
                            torch.optim.SGD([tp], lr=0.05, momentum=0.9, weight_decay=0.01)),
        "adam": (nn.Adam([p], lr=0.01), torch.optim.Adam([tp], lr=0.01)),
        "adam_wd": (nn.Adam([p], lr=0.01, weight_decay=0.1),
                    torch.optim.Adam([tp], lr=0.01, weight_decay=0.1)),
    }[kind]
    for g in grads:
        p.zero_grad()
        p.add_grad(g)
        tp.grad = torch.tensor(g)
        ours.step()
        theirs.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=0, atol=1e-12)


class Float32Only(np.ndarray):
    """An array whose every ufunc result must stay float32: it catches a float64 that slips
    into an update through a numpy scalar (NumPy 2 promotes float32 * np.float64 to float64)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = lambda a: a.view(np.ndarray) if isinstance(a, Float32Only) else a  # noqa: E731
        if "out" in kwargs:
            kwargs["out"] = tuple(plain(o) for o in kwargs["out"])
        result = getattr(ufunc, method)(*map(plain, inputs), **kwargs)
        if isinstance(result, np.ndarray) and result.dtype.kind == "f":
            assert result.dtype == np.float32, f"{ufunc.__name__} gave {result.dtype}"
            return result.view(Float32Only)
        return result


@pytest.mark.parametrize("make", [
    lambda ps: nn.SGD(ps, lr=np.float64(0.05)),
    lambda ps: nn.SGD(ps, lr=np.float64(0.05), momentum=np.float64(0.9),
                      weight_decay=np.float64(1e-3)),
    lambda ps: nn.Adam(ps, lr=np.float64(1e-3), weight_decay=1e-4)])
def test_updates_compute_in_float32_even_with_numpy_float64_hyperparameters(rng, make):
    p = nn.Parameter(rng.standard_normal((64, 32)).astype(np.float32).view(Float32Only))
    p.add_grad(rng.standard_normal((64, 32)).astype(np.float32))
    opt = make([p])
    for _ in range(2):
        opt.step()
    assert p.data.dtype == np.float32


def _train(model, x, y, opt, steps=3):
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(steps):
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
    return [p.data for p in model.parameters()]


SMALL_MODELS = {
    "paper_mlp": lambda: nn.models.paper_mlp(input_size=8 * 8 * 3, hidden=(16, 8), n_out=4),
    "mlp": lambda: nn.models.mlp(8 * 8 * 3, [0.5] * 3, [0.2] * 3, hidden=(12,), n_out=4,
                                 dropout=0.3),
    "small_cnn": lambda: nn.models.small_cnn([8, 8], [0.5] * 3, [0.2] * 3, widths=(4, 6),
                                             n_out=4),
}


@pytest.mark.parametrize("name", SMALL_MODELS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_step_in_backward_trains_exactly_like_step_after_backward(rng, name, weight_decay):
    """Same update, applied as each gradient arrives: every layer must use its weights (for
    dL/dx) before adding their gradient, or the deeper layers would see updated weights."""
    x = rng.random((5, 8 * 8 * 3), dtype=np.float32)
    y = (rng.random((5, 4)) < 0.4).astype(np.float32)
    results = []
    for step_in_backward in (False, True):
        model = SMALL_MODELS[name]()
        opt = nn.SGD(trainable_parameters(model), lr=0.5, weight_decay=weight_decay,
                     step_in_backward=step_in_backward)
        results.append(_train(model, x, y, opt))
    for after, fused in zip(*results):
        assert fused.dtype == np.float32
        np.testing.assert_allclose(fused, after, rtol=1e-4, atol=1e-6)
    first = SMALL_MODELS[name]()
    changed = any(not np.array_equal(p.data, q) for p, q in zip(first.parameters(), results[1]))
    assert changed   # the comparison above compared trained weights, not two initial states


def test_step_in_backward_keeps_no_gradient_and_refuses_momentum():
    layer = nn.Linear(3, 2, rng=0)
    nn.SGD(layer.parameters(), lr=0.1, step_in_backward=True)
    with pytest.raises(RuntimeError, match="keeps no gradient.*step_in_backward"):
        layer.weight.grad
    with pytest.raises(ValueError, match="momentum=0"):
        nn.SGD(nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9, step_in_backward=True)


def test_step_in_backward_on_a_large_layer_never_touches_a_gradient(rng):
    """The whole update happens inside backward, with no full-size temporary and without
    writing the gradient buffer (its pages stay unallocated)."""
    layer = nn.Linear(20_000, 256, rng=0, input_grad=False)   # a 20 MB weight
    x = rng.random((8, 20_000), dtype=np.float32)
    g = rng.random((8, 256), dtype=np.float32)
    expected = layer.weight.data - np.float32(0.05) * (x.T @ g)
    opt = nn.SGD(layer.parameters(), lr=0.05, step_in_backward=True)
    layer(x)
    tracemalloc.start()
    layer.backward(g)
    opt.step()
    opt.zero_grad()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < layer.weight.data.nbytes / 4, f"backward + step allocated {peak} bytes"
    np.testing.assert_allclose(layer.weight.data, expected, rtol=1e-5, atol=1e-6)
    assert not layer.weight._grad.any()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from Linux /proc")
def test_step_in_backward_never_brings_the_gradient_into_memory(rng):
    """RSS, not allocations: the gradient buffer exists but stays untouched OS pages, so the
    paper's first layer costs its 753 MB of weights and not 1.5 GB."""
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    x = rng.random((8, 100_000), dtype=np.float32)
    g = rng.random((8, 512), dtype=np.float32)
    before = rss()
    layer = nn.Linear(100_000, 512, rng=0, input_grad=False)   # a 205 MB weight
    opt = nn.SGD(layer.parameters(), lr=0.05, step_in_backward=True)
    for _ in range(2):
        layer(x)
        layer.backward(g)
        opt.step()
        opt.zero_grad()
    grown = rss() - before
    assert grown < 1.4 * layer.weight.data.nbytes, f"RSS grew {grown / 1e6:.0f} MB"
