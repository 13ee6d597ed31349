"""Layers: each forward keeps what its backward needs, and each backward sits right under it.

Shapes use N for the batch, D for input features and H for output features.
Every backward takes dL/d(output) and returns dL/d(input), and adds the gradients of the
layer's own parameters into their `.grad`. It computes dL/d(input) first: an optimizer that
steps inside backward changes a parameter as soon as its gradient is added.
"""

import numpy as np


class Parameter:
    """A learnable array `data` and `grad` = dL/d(data), same shape and dtype.

    Gradients add up over backward calls until `zero_grad()`, as in PyTorch. After
    SGD(..., step_in_backward=True), `updater` is that optimizer: each gradient is applied to
    `data` the moment backward produces it, and none is kept.
    """

    def __init__(self, data):
        self.data = data
        # np.zeros, not zeros_like: zeros gets pages from the OS that read as zero and only
        # take memory once written; zeros_like writes every byte (753 MB for the first layer,
        # which SGD(step_in_backward=True) never writes).
        self._grad = np.zeros(data.shape, data.dtype)
        # zero_grad() only raises this flag: filling the first layer's 753 MB gradient with zeros
        # costs as much as a matrix product, and the next backward overwrites it anyway. It starts
        # raised, so the very first backward writes in place too.
        self._grad_is_stale = True
        self.updater = None

    @property
    def grad(self):
        if self.updater is not None:
            raise RuntimeError(f"{self!r} keeps no gradient: {type(self.updater).__name__}"
                               "(step_in_backward=True) applies it inside backward")
        if self._grad_is_stale:
            self._grad.fill(0)
            self._grad_is_stale = False
        return self._grad

    def zero_grad(self):
        self._grad_is_stale = True

    def add_grad(self, g):
        """grad += g."""
        if self.updater is not None:
            self.updater.apply(self, g)
        elif self._grad_is_stale:
            np.copyto(self._grad, g)
            self._grad_is_stale = False
        else:
            self._grad += g

    def add_matmul_grad(self, a, b):
        """grad += a @ b, written straight into grad after zero_grad(): no full-size temporary."""
        if self.updater is not None:
            self.updater.apply_product(self, a, b)
        elif self._grad_is_stale:
            np.matmul(a, b, out=self._grad)
            self._grad_is_stale = False
        else:
            self._grad += a @ b

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: `__call__` runs forward; subclasses write `forward` and `backward`.

    Parameters and sub-modules are found by walking the attributes (and lists of modules), in the
    order they were set, which gives `state_dict()` names like PyTorch's ("0.weight").
    """

    training = True

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    def _children(self):
        """(name, Parameter or Module) pairs directly under this module."""
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield str(i), item

    def named_parameters(self, prefix=""):
        for name, child in self._children():
            if isinstance(child, Parameter):
                yield prefix + name, child
            else:
                yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for _, child in self._children():
            if isinstance(child, Module):
                yield from child.modules()

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode=True):
        """Training mode (the default); only layers like Dropout behave differently."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def to(self, dtype):
        """Cast every parameter to dtype (float64 for gradient checks); gradients are zeroed."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p._grad = np.zeros(p.data.shape, p.data.dtype)
            p._grad_is_stale = True
        return self

    def state_dict(self):
        """{name: array}; the arrays are the parameters themselves, not copies."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters; names and shapes must match exactly."""
        own = dict(self.named_parameters())
        check_same_names(own, state)
        for name, p in own.items():
            value = np.asarray(state[name])
            if value.shape != p.data.shape:
                raise ValueError(f"{name}: shape {value.shape} does not match the model's "
                                 f"{p.data.shape}")
            np.copyto(p.data, value, casting="same_kind")

    def num_parameters(self):
        return sum(p.data.size for p in self.parameters())


def check_same_names(own, state):
    """KeyError unless the dicts own and state have the same keys, naming those that differ."""
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    if missing or unexpected:
        raise KeyError(f"state_dict mismatch: missing {sorted(missing)}, "
                       f"unexpected {sorted(unexpected)}")


def _saved(layer, value):
    """What forward saved for backward, or a clear error when forward never ran."""
    if value is None:
        raise RuntimeError(f"{type(layer).__name__}.backward() called before forward(): "
                           "run the forward pass first")
    return value


class Linear(Module):
    """y = x @ W + b.   x: (N, D), W: (D, H), b: (H,), y: (N, H).

    Backward, for g = dL/dy (N, H):
        dL/dW = x.T @ g      (D, H)
        dL/db = g.sum(0)     (H,)     -- b was added to every row, so its gradient sums them
        dL/dx = g @ W.T      (N, D)

    W is stored (in, out), the transpose of PyTorch's, so forward is x @ W without a transpose.
    Initialisation, as PyTorch's default: W and b uniform in [-1/sqrt(D), 1/sqrt(D)], drawn from
    `rng` (a numpy Generator, or an int seed).

    input_grad=False skips dL/dx and makes backward return None. Use it for the first layer:
    its input is the images, which are not learned, and computing g @ W.T there would cost a
    third pass over a 367,500 x 512 matrix for nothing.
    """

    def __init__(self, in_features, out_features, rng=None, dtype=np.float32, input_grad=True):
        rng = np.random.default_rng(rng)
        bound = 1.0 / np.sqrt(in_features)
        self.weight = Parameter(_uniform(rng, (in_features, out_features), bound, dtype))
        self.bias = Parameter(_uniform(rng, (out_features,), bound, dtype))
        self.input_grad = input_grad
        self._x = None

    def forward(self, x):
        _check_dtype(self, x, self.weight.data.dtype)
        self._x = x
        y = x @ self.weight.data
        y += self.bias.data
        return y

    def backward(self, g):
        x = _saved(self, self._x)
        # dL/dx first, while W is still the W of forward: with SGD(step_in_backward=True)
        # adding W's gradient below also updates W.
        dx = g @ self.weight.data.T if self.input_grad else None
        self.weight.add_matmul_grad(x.T, g)
        self.bias.add_grad(g.sum(axis=0))
        return dx

    def __repr__(self):
        d, h = self.weight.data.shape
        return f"Linear({d}, {h}{'' if self.input_grad else ', input_grad=False'})"


def _uniform(rng, shape, bound, dtype):
    # Draw in float32 when that is the target: a float64 draw of the first layer would take
    # 1.5 GB on its way to 753 MB.
    draw_dtype = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    w = rng.random(shape, dtype=draw_dtype)
    w *= 2 * bound
    w -= bound
    return w.astype(dtype, copy=False)


def _check_dtype(layer, x, dtype):
    if x.dtype != dtype:
        raise TypeError(f"{layer!r} got {x.dtype} input but its parameters are {dtype}; "
                        f"convert the input or call model.to(np.{x.dtype})")


class ReLU(Module):
    """y = max(x, 0).   Backward: dL/dx = g where x > 0, else 0 (we take 0 at the kink)."""

    def __init__(self):
        self._positive = None

    def forward(self, x):
        self._positive = x > 0
        return np.maximum(x, 0)

    def backward(self, g):
        return g * _saved(self, self._positive)

    def __repr__(self):
        return "ReLU()"


def sigmoid(z):
    """1 / (1 + exp(-z)), never overflowing: exp is only taken of -|z| <= 0."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


class Sigmoid(Module):
    """p = sigmoid(z).   Backward: dL/dz = g * p * (1 - p), from p' = p (1 - p)."""

    def __init__(self):
        self._p = None

    def forward(self, z):
        self._p = sigmoid(z)
        return self._p

    def backward(self, g):
        p = _saved(self, self._p)
        return g * p * (1 - p)

    def __repr__(self):
        return "Sigmoid()"


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse (the chain rule).

    A layer whose backward returns None (a first Linear with input_grad=False) ends the pass.
    """

    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, g):
        for layer in reversed(self.layers):
            g = layer.backward(g)
            if g is None:
                break
        return g

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
