import numpy as np
import pytest

import nn
from nn.gradcheck import relative_error
from conftest import away_from_kink


class BiasMeanLinear(nn.Linear):
    """A classic bug: the bias gradient averages over the batch instead of summing."""

    def backward(self, g):
        dx = super().backward(g)
        self.bias._grad[...] = g.mean(axis=0)
        return dx


class ForgetfulReLU(nn.ReLU):
    """Another: passes the gradient through where the input was negative."""

    def backward(self, g):
        return g.copy()


class SigmoidWithoutChainRule(nn.Sigmoid):
    """And another: returns p (1 - p) but forgets to multiply by the incoming gradient."""

    def backward(self, g):
        return self._p * (1 - self._p)


def test_report_passes_a_correct_layer_and_names_the_worst_coordinate(rng):
    report = nn.gradcheck(nn.Linear(5, 3, dtype=np.float64), rng.standard_normal((4, 5)))
    assert report.ok and report.max_error < 1e-7
    text = str(report)
    assert text.splitlines()[-1].startswith("PASS") and "weight" in text
    for check in report.checks:
        assert check.n_checked == min(check.size, 20)
        assert len(check.worst_index) == {"input": 2, "weight": 2, "bias": 1}[check.name]


def test_a_bias_gradient_that_averages_is_caught(rng):
    report = nn.gradcheck(BiasMeanLinear(5, 3, dtype=np.float64), rng.standard_normal((4, 5)))
    bias = next(c for c in report.checks if c.name == "bias")
    assert not report.ok and bias.max_error > 1e-4
    # the mean is the sum divided by N=4: the analytic value is a quarter of the numeric one
    assert bias.analytic == pytest.approx(bias.numeric / 4, rel=1e-6)
    assert "FAIL" in str(report)
    assert all(c.max_error < 1e-7 for c in report.checks if c.name != "bias")


def test_a_relu_that_ignores_its_mask_is_caught(rng):
    x = away_from_kink(rng.standard_normal((4, 6)))
    assert nn.gradcheck(ForgetfulReLU(), x).max_error > 1e-4


def test_a_sigmoid_that_drops_the_upstream_gradient_is_caught(rng):
    assert nn.gradcheck(SigmoidWithoutChainRule(), rng.standard_normal((4, 6))).max_error > 1e-4


def test_a_bug_deep_inside_a_model_is_caught_through_the_loss(rng):
    model = nn.Sequential(nn.Linear(6, 5, rng=0, dtype=np.float64), ForgetfulReLU(),
                          nn.Linear(5, 3, rng=1, dtype=np.float64), nn.Sigmoid())
    x = rng.standard_normal((8, 6))
    y = (rng.random((8, 3)) < 0.5).astype(np.float64)
    report = nn.gradcheck(model, x, y, loss=nn.BCELoss())
    assert not report.ok
    assert report.checks[-1].max_error < 1e-7  # the output layer is above the bug


def test_large_arrays_are_sampled_and_restored(rng):
    layer = nn.Linear(300, 4, dtype=np.float64)
    before = layer.weight.data.copy()
    x = rng.standard_normal((2, 300))
    x_before = x.copy()
    report = nn.gradcheck(layer, x, max_coords=7, seed=3)
    assert [c.n_checked for c in report.checks] == [7, 7, 4]
    assert np.array_equal(layer.weight.data, before) and np.array_equal(x, x_before)


def test_float32_is_refused_with_a_hint(rng):
    with pytest.raises(TypeError, match=r"float64.*to\(np.float64\)"):
        nn.gradcheck(nn.Linear(3, 2), rng.standard_normal((2, 3)).astype(np.float32))


def test_a_module_and_target_without_a_loss_is_refused(rng):
    with pytest.raises(ValueError, match="needs loss="):
        nn.gradcheck(nn.Sigmoid(), rng.standard_normal((2, 3)), np.zeros((2, 3)))


def test_relative_error_is_symmetric_and_discounts_rounding():
    a, b = np.array([1.0, 1e-3, 0.0]), np.array([1.1, 1e-3 + 1e-9, 0.0])
    assert np.array_equal(relative_error(a, b),
                          relative_error(b, a))
    err = relative_error(a, b)
    assert err[0] == pytest.approx(0.1 / 2.1) and err[1] == pytest.approx(1e-9 / 2e-3, rel=1e-6)
    assert err[2] == 0
    assert relative_error(a, b, rounding=2e-9)[1] == 0
