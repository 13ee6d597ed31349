"""Numerical gradient checking: does backward agree with the definition of a derivative?

For a scalar objective f and one coordinate w of an input or parameter, the centred difference

    (f(w + h) - f(w - h)) / (2 h)

approximates df/dw with an error of order h^2. In float64 with h = 1e-5 both the truncation
error (h^2 ~ 1e-10) and rounding (eps / h ~ 1e-11) are tiny, so the symmetric relative error

    |analytic - numeric| / max(|analytic| + |numeric|, 1e-8)

comes out below 1e-7 for a correct backward, and above 1e-4 for a bug. Keep inputs away from
kinks (ReLU at 0): within h of one, the two sides of the difference see different slopes.

One limit is not a bug: f itself is only known to about eps |f| (eps = 2.2e-16), so the numeric
slope carries a rounding error near eps |f| / h, about 1e-11 for a loss near 1. For a tiny
gradient (a mean over many outputs, a nearly dead unit) that noise alone would exceed 1e-7 of
it, so the part of |analytic - numeric| within eps |f| / h is not counted as error.
"""

from dataclasses import dataclass

import numpy as np

from .layers import Module


@dataclass
class TensorCheck:
    """The check of one array: how many coordinates, and the worst one."""

    name: str
    size: int
    n_checked: int
    max_error: float       # beyond what rounding explains: the verdict
    raw_error: float       # the plain symmetric relative error, rounding included
    worst_index: tuple
    analytic: float
    numeric: float


@dataclass
class GradcheckReport:
    checks: list
    tol: float

    @property
    def max_error(self):
        return max((c.max_error for c in self.checks), default=0.0)

    @property
    def ok(self):
        return self.max_error < self.tol

    def __str__(self):
        lines = [f"{'array':<16} {'checked':>13}  {'rel err':>8}  {'raw':>8}  worst at   "
                 "analytic vs numeric"]
        for c in self.checks:
            flag = "" if c.max_error < self.tol else "   <-- FAIL"
            lines.append(f"{c.name:<16} {c.n_checked:>6}/{c.size:<6}  {c.max_error:8.1e}  "
                         f"{c.raw_error:8.1e}  {str(c.worst_index):<10} "
                         f"{c.analytic:+.10e} vs {c.numeric:+.10e}{flag}")
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(f"{verdict}: worst relative error {self.max_error:.2e} (tolerance "
                     f"{self.tol:.0e})")
        return "\n".join(lines)


def relative_error(a, b, rounding=0.0):
    """Symmetric relative error, elementwise: max(|a - b| - rounding, 0) / max(|a| + |b|, 1e-8)."""
    return np.maximum(np.abs(a - b) - rounding, 0) / np.maximum(np.abs(a) + np.abs(b), 1e-8)


def gradcheck(f, x, y=None, loss=None, *, h=1e-5, max_coords=20, tol=1e-7, seed=0):
    """Compare f's backward with centred differences on x and on every parameter of f.

    f, x, y, loss:
      - gradcheck(module, x): the objective is sum(G * module(x)) for a fixed random G, so
        every output coordinate takes part; backward receives G.
      - gradcheck(module, x, y, loss): the objective is loss(module(x), y).
      - gradcheck(loss, p, y): the objective is loss(p, y).
    Arrays larger than max_coords are checked on that many random coordinates (seeded).
    Everything must be float64: float32's 1e-7 resolution would drown the difference.
    Returns a GradcheckReport; `report.ok` says whether the worst error is below tol.
    """
    rng = np.random.default_rng(seed)
    params = list(f.named_parameters()) if isinstance(f, Module) else []
    tensors = [("input", x)] + [(name, p.data) for name, p in params]
    for name, a in tensors:
        if a.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64, but {name} is {a.dtype}: pass a float64 "
                            "input and call module.to(np.float64)")
        if not a.flags.c_contiguous:  # perturbing must write the array itself, not a copy
            raise ValueError(f"gradcheck needs a C-contiguous {name}: pass np.ascontiguousarray")
    objective, analytic_input = _objective(f, x, y, loss, rng)

    # Analytic gradients first: the numerical passes overwrite what forward saved.
    if isinstance(f, Module):
        f.zero_grad()
    analytic = {"input": analytic_input()}
    analytic.update({name: p.grad.copy() for name, p in params})

    checks = []
    for name, array in tensors:
        if analytic[name] is None:  # e.g. a first Linear with input_grad=False
            continue
        flat = array.reshape(-1)  # a view: writing it perturbs the array itself
        n = flat.size
        coords = np.arange(n) if n <= max_coords else rng.choice(n, max_coords, replace=False)
        numeric, rounding = np.array([_centred_difference(objective, flat, i, h)
                                      for i in coords]).T
        exact = analytic[name].reshape(-1)[coords]
        errors = relative_error(exact, numeric, rounding)
        raw = relative_error(exact, numeric)
        # The worst coordinate: by the verdict's error, then by the raw one when all agree
        # to within rounding (so the report does not point at a dead unit's 0 vs 0).
        worst = int(np.lexsort((raw, errors))[-1])
        where = tuple(int(i) for i in np.unravel_index(coords[worst], array.shape))
        checks.append(TensorCheck(name, n, len(coords), float(errors[worst]),
                                  float(raw.max()), where, float(exact[worst]),
                                  float(numeric[worst])))
    return GradcheckReport(checks, tol)


def _objective(f, x, y, loss, rng):
    """The scalar objective of the inputs, and a function that returns its analytic dL/dx."""
    if not isinstance(f, Module):  # f is a loss
        def objective():
            return f(x, y)

        def analytic_input():
            objective()
            return f.backward()
    elif y is None:
        g = rng.standard_normal(f(x).shape)

        def objective():
            return float(np.sum(g * f(x)))

        def analytic_input():
            f(x)
            return f.backward(g)
    else:
        if loss is None:
            raise ValueError("gradcheck(module, x, y) needs loss= to turn outputs into a scalar")

        def objective():
            return loss(f(x), y)

        def analytic_input():
            objective()
            return f.backward(loss.backward())
    return objective, analytic_input


def _centred_difference(objective, flat, i, h):
    """(f(w + h) - f(w - h)) / 2h at coordinate i, and the rounding error it may carry."""
    old = flat[i]
    flat[i] = old + h
    plus = objective()
    flat[i] = old - h
    minus = objective()
    flat[i] = old
    rounding = np.finfo(np.float64).eps * max(abs(plus), abs(minus)) / h
    return (plus - minus) / (2 * h), rounding
