import numpy as np
import pytest

import nn
from nn.models import paper_mlp
from conftest import away_from_kink


def float64_mlp(d, hidden=(10, 8, 6, 5), n_out=25, seed=0, logits=False):
    model = paper_mlp(d, hidden, n_out, rng=seed, dtype=np.float64, logits=logits)
    model[0].input_grad = True
    return model


@pytest.mark.parametrize("d, h", [(7, 5), (1, 3), (12, 1)])
def test_linear_gradcheck_input_weight_bias(rng, d, h):
    layer = nn.Linear(d, h, rng=0, dtype=np.float64)
    report = nn.gradcheck(layer, rng.standard_normal((4, d)))
    assert [c.name for c in report.checks] == ["input", "weight", "bias"]
    assert report.max_error < 1e-7, report


def test_relu_gradcheck_away_from_kink(rng):
    x = away_from_kink(rng.standard_normal((6, 9)))
    report = nn.gradcheck(nn.ReLU(), x, max_coords=100)
    assert report.checks[0].n_checked == x.size
    assert report.max_error < 1e-7, report


def test_sigmoid_gradcheck(rng):
    report = nn.gradcheck(nn.Sigmoid(), 3 * rng.standard_normal((5, 4)), max_coords=100)
    assert report.max_error < 1e-7, report


def test_paper_shaped_mlp_gradcheck_end_to_end(rng):
    model = float64_mlp(12)
    x = away_from_kink(rng.standard_normal((4, 12)))
    y = (rng.random((4, 25)) < 0.2).astype(np.float64)
    report = nn.gradcheck(model, x, y, loss=nn.BCELoss(), max_coords=60)
    # input, then weight and bias of each of the five Linear layers
    assert len(report.checks) == 11
    assert report.max_error < 1e-7, report


def test_paper_mlp_first_layer_at_full_poster_size(rng):
    """Sampled coordinates of a 367,500-input first layer, through the whole model and BCE."""
    d = 350 * 350 * 3
    model = float64_mlp(d, hidden=(4, 4, 4, 4), seed=1)
    x = rng.random((3, d))
    y = (rng.random((3, 25)) < 0.2).astype(np.float64)
    report = nn.gradcheck(model, x, y, loss=nn.BCELoss(), max_coords=8)
    first = report.checks[1]
    assert (first.name, first.size, first.n_checked) == ("0.weight", d * 4, 8)
    assert report.max_error < 1e-7, report


def test_float32_in_float32_out_everywhere(rng):
    model = paper_mlp(20, (8, 8, 8, 8), 25, rng=0)
    x = rng.random((5, 20), dtype=np.float32)
    probs = model(x)
    loss_fn = nn.BCELoss()
    loss_fn(probs, (rng.random((5, 25)) < 0.3).astype(np.float32))
    model.backward(loss_fn.backward())
    assert probs.dtype == np.float32
    assert all(p.data.dtype == np.float32 and p.grad.dtype == np.float32
               for p in model.parameters())


def test_float64_in_float64_out(rng):
    layer = nn.Linear(3, 2, dtype=np.float64)
    x = rng.random((4, 3))
    assert layer(x).dtype == np.float64
    assert layer.backward(np.ones((4, 2))).dtype == np.float64
    assert nn.Sigmoid()(x).dtype == nn.ReLU()(x).dtype == np.float64


def test_dtype_mismatch_is_a_clear_error(rng):
    with pytest.raises(TypeError, match=r"float64 input .* float32"):
        nn.Linear(3, 2)(rng.random((4, 3)))


@pytest.mark.parametrize("layer", [nn.Linear(3, 2), nn.ReLU(), nn.Sigmoid(),
                                   nn.Sequential(nn.Linear(3, 2), nn.ReLU())])
def test_backward_before_forward_is_a_clear_error(layer):
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, 2), np.float32))


def test_first_layer_skips_input_gradient(rng):
    """No dL/dx for the images: backward returns None and never allocates an (N, D) array."""
    import tracemalloc

    n, d = 8, 100_000
    model = paper_mlp(d, (16, 8, 8, 8), 25, rng=0)
    x = rng.random((n, d), dtype=np.float32)
    model(x)
    model.zero_grad()
    g = np.ones((n, 25), np.float32)
    tracemalloc.start()
    out = model.backward(g)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out is None and model[0].input_grad is False
    assert model[0].weight.grad.any()
    assert peak < x.nbytes / 4, f"backward allocated {peak} bytes; dL/dx alone is {x.nbytes}"
    # the same layer with input_grad=True does allocate it, so the bound above can fail
    model[0].input_grad = True
    model(x)
    tracemalloc.start()
    assert model.backward(g).shape == x.shape
    assert tracemalloc.get_traced_memory()[1] >= x.nbytes
    tracemalloc.stop()


def test_linear_init_is_seeded_and_bounded():
    a, b = nn.Linear(100, 7, rng=3), nn.Linear(100, 7, rng=3)
    assert np.array_equal(a.weight.data, b.weight.data)
    assert np.abs(a.weight.data).max() <= 0.1 and np.abs(a.weight.data).max() > 0.09
    assert not np.array_equal(a.weight.data, nn.Linear(100, 7, rng=4).weight.data)


def test_gradients_accumulate_until_zero_grad(rng):
    layer = nn.Linear(3, 2, rng=0, dtype=np.float64)
    x, g = rng.random((4, 3)), rng.random((4, 2))
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    np.testing.assert_allclose(once, x.T @ g)
    layer.zero_grad()
    assert not layer.weight.grad.any() and not layer.bias.grad.any()
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, once)


def test_parameters_state_dict_and_modes():
    model = paper_mlp(6, (5, 4, 3, 2), 3, rng=0)
    names = [n for n, _ in model.named_parameters()]
    assert names == [f"{i}.{w}" for i in (0, 2, 4, 6, 8) for w in ("weight", "bias")]
    assert model.num_parameters() == 6*5+5 + 5*4+4 + 4*3+3 + 3*2+2 + 2*3+3
    other = paper_mlp(6, (5, 4, 3, 2), 3, rng=1)
    other.load_state_dict({k: v.copy() for k, v in model.state_dict().items()})
    for a, b in zip(model.parameters(), other.parameters()):
        assert np.array_equal(a.data, b.data)
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({"0.weight": model[0].weight.data})
    bad = dict(model.state_dict(), **{"0.bias": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"0\.bias: shape \(4,\)"):
        other.load_state_dict(bad)
    assert model.eval() is model and not any(m.training for m in model.modules())
    assert all(m.training for m in model.train().modules())


def test_stable_sigmoid_at_extremes():
    z = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    for dtype in (np.float32, np.float64):
        p = nn.sigmoid(z.astype(dtype))
        assert p.dtype == dtype and np.all(np.isfinite(p))
        assert p[0] == 0 and p[2] == 0.5 and p[-1] == 1
    layer = nn.Sigmoid()
    layer(z)
    assert np.all(np.isfinite(layer.backward(np.ones_like(z))))


torch = pytest.importorskip("torch", reason="torch not installed (pip install -e .[torch])")


def test_mlp_forward_and_all_gradients_equal_torch_float64(rng):
    model = float64_mlp(12, hidden=(10, 8, 6, 5), seed=2, logits=True)
    x = away_from_kink(rng.standard_normal((6, 12)))
    y = (rng.random((6, 25)) < 0.3).astype(np.float64)
    for loss_fn, with_sigmoid in ((nn.BCEWithLogitsLoss(), False), (nn.BCELoss(), True)):
        layers = list(model.layers) + ([nn.Sigmoid()] if with_sigmoid else [])
        ours = nn.Sequential(*layers)
        ours.zero_grad()
        out = ours(x)
        loss = loss_fn(out, y)
        dx = ours.backward(loss_fn.backward())

        tx = torch.tensor(x, requires_grad=True)
        t_layers = []
        for layer in layers:
            if isinstance(layer, nn.Linear):
                lin = torch.nn.Linear(*layer.weight.data.shape, dtype=torch.float64)
                with torch.no_grad():
                    lin.weight.copy_(torch.tensor(layer.weight.data.T))
                    lin.bias.copy_(torch.tensor(layer.bias.data))
                t_layers.append(lin)
            else:
                t_layers.append(torch.nn.ReLU() if isinstance(layer, nn.ReLU)
                                else torch.nn.Sigmoid())
        t_model = torch.nn.Sequential(*t_layers)
        t_loss_fn = torch.nn.BCELoss() if with_sigmoid else torch.nn.BCEWithLogitsLoss()
        t_out = t_model(tx)
        t_loss = t_loss_fn(t_out, torch.tensor(y))
        t_loss.backward()

        np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=0, atol=1e-10)
        assert abs(loss - t_loss.item()) < 1e-10
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-10)
        t_linears = [m for m in t_layers if isinstance(m, torch.nn.Linear)]
        for ours_lin, t_lin in zip([m for m in layers if isinstance(m, nn.Linear)], t_linears):
            np.testing.assert_allclose(ours_lin.weight.grad, t_lin.weight.grad.numpy().T,
                                       rtol=0, atol=1e-10)
            np.testing.assert_allclose(ours_lin.bias.grad, t_lin.bias.grad.numpy(),
                                       rtol=0, atol=1e-10)
