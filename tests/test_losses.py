import numpy as np
import pytest

import nn


@pytest.fixture
def batch(rng):
    y = (rng.random((5, 25)) < 0.2).astype(np.float64)
    return rng.standard_normal((5, 25)) * 2, y


def test_bce_value_by_hand():
    # -mean([log .8, log(1 - .4)]) = -(log .8 + log .6) / 2
    loss = nn.BCELoss()(np.array([[0.8, 0.4]]), np.array([[1.0, 0.0]]))
    assert loss == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2, rel=1e-12)


def test_both_losses_agree_on_the_same_logits(batch):
    z, y = batch
    assert nn.BCELoss()(nn.sigmoid(z), y) == pytest.approx(nn.BCEWithLogitsLoss()(z, y),
                                                           rel=1e-12)


def test_bce_gradcheck(batch, rng):
    # 1/p(1-p) bends sharply near 0 and 1, where h^2 truncation error grows: stay inside
    _, y = batch
    p = rng.uniform(0.05, 0.95, y.shape)
    assert nn.gradcheck(nn.BCELoss(), p, y, max_coords=200).max_error < 1e-7


@pytest.mark.parametrize("pos_weight", [None, np.linspace(0.5, 5, 25)])
def test_bce_with_logits_gradcheck(batch, pos_weight):
    z, y = batch
    report = nn.gradcheck(nn.BCEWithLogitsLoss(pos_weight), z, y, max_coords=200)
    assert report.max_error < 1e-7, report


def test_pos_weight_scales_only_positive_terms():
    z, y = np.array([[0.3, -1.2]]), np.array([[1.0, 0.0]])
    plain = nn.BCEWithLogitsLoss()
    plain(z, y)
    per_entry = -(np.log(nn.sigmoid(z[0, 0])) * 3 + np.log(1 - nn.sigmoid(z[0, 1]))) / 2
    assert nn.BCEWithLogitsLoss(np.array([3.0, 7.0]))(z, y) == pytest.approx(per_entry)


def test_sigmoid_then_bce_collapses_to_p_minus_y(batch):
    z, y = batch
    sig, loss_fn = nn.Sigmoid(), nn.BCELoss()
    loss_fn(sig(z), y)
    np.testing.assert_allclose(sig.backward(loss_fn.backward()), (nn.sigmoid(z) - y) / y.size,
                               rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_at_logits_of_plus_minus_1000_are_finite_without_warnings(dtype):
    # the suite runs with warnings as errors, so an overflow or log(0) here fails the test
    z = np.array([[-1000.0, 1000.0, -1000.0, 1000.0]], dtype)
    y = np.array([[0.0, 1.0, 1.0, 0.0]], dtype)
    for loss_fn, x in ((nn.BCEWithLogitsLoss(), z), (nn.BCELoss(), nn.Sigmoid()(z))):
        loss = loss_fn(x, y)
        grad = loss_fn.backward()
        assert np.isfinite(loss) and np.all(np.isfinite(grad)) and grad.dtype == dtype
    # two entries right, two confidently wrong at 1000 each: a mean of 500 from logits;
    # from probabilities the clip caps each wrong entry near -log(eps) instead of inf
    assert nn.BCEWithLogitsLoss()(z, y) == pytest.approx(500.0)
    assert 0 < nn.BCELoss()(nn.sigmoid(z), y) < 40


def test_shape_mismatch_and_backward_first_are_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        nn.BCELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.BCEWithLogitsLoss().backward()


torch = pytest.importorskip("torch", reason="torch not installed (pip install -e .[torch])")


@pytest.mark.parametrize("pos_weight", [None, np.linspace(0.5, 5, 25)])
def test_losses_equal_torch_float64(batch, pos_weight):
    z, y = batch
    for ours, theirs, x in (
            (nn.BCEWithLogitsLoss(pos_weight),
             torch.nn.BCEWithLogitsLoss(pos_weight=None if pos_weight is None
                                        else torch.tensor(pos_weight)), z),
            (nn.BCELoss(), torch.nn.BCELoss(), nn.sigmoid(z))):
        if pos_weight is not None and isinstance(ours, nn.BCELoss):
            continue
        tx = torch.tensor(x, requires_grad=True)
        t_loss = theirs(tx, torch.tensor(y))
        t_loss.backward()
        assert abs(ours(x, y) - t_loss.item()) < 1e-10
        np.testing.assert_allclose(ours.backward(), tx.grad.numpy(), rtol=0, atol=1e-10)
