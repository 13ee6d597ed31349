"""Optimizers: SGD (momentum, weight decay) and Adam, updating parameters in place.

The update of a big parameter runs over row blocks of about 1 MB, on all cores. Why: written
whole, `p -= lr * g` first builds `lr * g`, a second 753 MB array for the paper's first layer,
and numpy's elementwise operations use a single core, which cannot saturate memory bandwidth.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .blas import add_product
from .layers import check_same_names

_BLOCK_BYTES = 1 << 20
_POOL = None


def _blocks(n_rows, row_bytes):
    """Row ranges of about 1 MB covering range(n_rows)."""
    step = max(1, _BLOCK_BYTES // max(row_bytes, 1))
    return [(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def _each_block(fn, *arrays):
    """Call fn(*row_blocks) over matching row blocks of same-shaped arrays, on all cores.

    numpy releases the GIL inside ufuncs, so plain threads run the blocks in parallel.
    """
    global _POOL
    first = arrays[0]
    if first.ndim == 0 or first.nbytes <= 4 * _BLOCK_BYTES:
        fn(*arrays)
        return
    row_bytes = first.nbytes // first.shape[0]
    ranges = _blocks(first.shape[0], row_bytes)
    workers = os.cpu_count() or 1
    if workers == 1:
        for lo, hi in ranges:
            fn(*(a[lo:hi] for a in arrays))
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(workers, thread_name_prefix="nn-optim")
    # One task per worker, each over a contiguous share of the blocks: little overhead per task.
    shares = np.array_split(np.arange(len(ranges)), workers)

    def run(share):
        for k in share:
            lo, hi = ranges[k]
            fn(*(a[lo:hi] for a in arrays))

    for future in [_POOL.submit(run, share) for share in shares if len(share)]:
        future.result()


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimizer got no parameters")
        self.lr = lr

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def state_dict(self):
        """{name: array}: the optimizer's state, enough to resume a run bit for bit."""
        return {}

    def load_state_dict(self, state):
        """Copy a state_dict() back in; names, shapes and dtypes must match exactly.

        This checks them, so a subclass calls it before copying anything: a state saved by
        another optimizer, or with other settings, is refused, never broadcast or cast.
        """
        own = self.state_dict()
        check_same_names(own, state)
        for name, array in own.items():
            value = np.asarray(state[name])
            if (value.shape, value.dtype) != (array.shape, array.dtype):
                raise ValueError(f"{name}: {value.dtype} {value.shape} does not match the "
                                 f"optimizer's {array.dtype} {array.shape}")


class SGD(Optimizer):
    """v = momentum * v + (g + weight_decay * p);  p -= lr * v.   Without momentum, v is that g.

    v starts at zero, so the first step's v is the gradient itself, as in PyTorch (no dampening).

    step_in_backward=True (momentum 0 only): each gradient is applied the moment backward adds
    it, p <- (1 - lr * weight_decay) * p - lr * g, the same update, and no gradient is kept.
    Why: the paper's first layer then gets x.T @ g added into W by one BLAS call (nn/blas.py)
    instead of a 753 MB gradient written by one pass over memory and read back by another, and
    the gradients' memory is never touched. step() and zero_grad() have nothing left to do,
    p.grad raises, and every backward changes the weights, so use it for training loops only.
    """

    def __init__(self, params, lr=0.05, momentum=0.0, weight_decay=0.0, step_in_backward=False):
        super().__init__(params, lr)
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.velocity = [np.zeros_like(p.data) for p in self.params] if momentum else None
        self.step_in_backward = step_in_backward
        if step_in_backward:
            if momentum:
                raise ValueError("step_in_backward=True needs momentum=0: a momentum step "
                                 "needs the whole gradient before it can start")
            for p in self.params:
                p.updater = self

    def apply(self, p, g):
        """Called by p.add_grad(g) inside backward: p <- (1 - lr * wd) * p - lr * g."""
        lr, wd = float(self.lr), float(self.weight_decay)
        if wd:
            p.data *= 1 - lr * wd
        p.data -= lr * g

    def apply_product(self, p, a, b):
        """Called by p.add_matmul_grad(a, b): the same update for g = a @ b, as one gemm."""
        lr, wd = float(self.lr), float(self.weight_decay)
        add_product(p.data, a, b, alpha=-lr, beta=1 - lr * wd)

    def step(self):
        if self.step_in_backward:
            return   # every parameter was updated inside backward
        # Python floats keep float32 arrays float32; a numpy float64 lr would promote lr * g
        lr, mu, wd = float(self.lr), float(self.momentum), float(self.weight_decay)

        def update(data, grad, velocity=None):
            g = grad + wd * data if wd else grad
            if velocity is not None:
                velocity *= mu
                velocity += g
                g = velocity
            data -= lr * g

        for i, p in enumerate(self.params):
            if mu:
                _each_block(update, p.data, p.grad, self.velocity[i])
            else:
                _each_block(update, p.data, p.grad)

    def state_dict(self):
        if not self.momentum:
            return {}
        return {f"velocity.{i}": v for i, v in enumerate(self.velocity)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self.momentum:
            for i, v in enumerate(self.velocity):
                np.copyto(v, state[f"velocity.{i}"])


class Adam(Optimizer):
    """Adam (Kingma & Ba), as torch.optim.Adam; weight_decay adds wd * p to the gradient.

        m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        step_size = float(self.lr) / (1 - b1 ** self.t)
        # math, not np: a numpy float64 scalar would turn every block's update into float64
        sqrt_bc2 = math.sqrt(1 - b2 ** self.t)
        eps, wd = self.eps, self.weight_decay

        def update(data, grad, m, v):
            g = grad + wd * data if wd else grad
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            data -= step_size * m / (np.sqrt(v) / sqrt_bc2 + eps)

        for p, m, v in zip(self.params, self.m, self.v):
            _each_block(update, p.data, p.grad, m, v)

    def state_dict(self):
        state = {"t": np.array(self.t, np.int64)}  # one dtype on every platform
        for i, (m, v) in enumerate(zip(self.m, self.v)):
            state[f"m.{i}"], state[f"v.{i}"] = m, v
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.t = int(state["t"])
        for i, (m, v) in enumerate(zip(self.m, self.v)):
            np.copyto(m, state[f"m.{i}"])
            np.copyto(v, state[f"v.{i}"])
