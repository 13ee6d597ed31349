"""Time one training step of the paper's MLP: nn against PyTorch and against the BLAS floor.

    python benchmarks/bench_step.py                  # full size: 367500 inputs, batch 33
    python benchmarks/bench_step.py --json out.json  # also write every number to out.json
    python benchmarks/bench_step.py --quick          # a small input, 2 repeats: a smoke test

A step is what the paper's training loop does per minibatch: forward, BCE loss, backward,
SGD (lr 0.05) step, zero_grad, for 367500 -> 512 -> 256 -> 128 -> 64 -> 25 (ReLU, then
Sigmoid) on 33 float32 images. These are timed, in one process and round-robin so that
machine noise hits them alike:

    nn        nn.models.paper_mlp with nn.BCELoss and nn.SGD(step_in_backward=True), as
              examples/train_posters.py trains: each layer's update is applied inside backward,
              the first layer's by one gemm that adds -lr * X.T @ dY into W (nn/blas.py).
    nn textbook  the same with nn.SGD's default: backward fills every p.grad, then opt.step().
    torch     the same network in PyTorch on the CPU, with nn's initial weights copied in, the
              idiomatic loop: torch.nn.BCELoss, torch.optim.SGD, zero_grad() (set_to_none),
              an input without requires_grad, all cores. Skipped when torch is not installed.
    torch in backward  PyTorch's own way to step inside backward (its tutorial "How to save
              memory by fusing the optimizer step into the backward pass"): one SGD per
              parameter, stepped by register_post_accumulate_grad_hook.
    floor     what no implementation can avoid: the first layer's two big products,
              X @ W (33 x 367500 @ 367500 x 512) and X.T @ dY written into a preallocated
              367500 x 512 array, timed alone with numpy and summed.

Each reports the median over --repeats rounds after --warmup rounds, with min and max, and
the ratios to torch and to the floor. nn's steps are also split into forward (with the loss),
backward and update (opt.step and zero_grad), to show where the time goes.

Between two measurements the script pauses --settle seconds: after a call, OpenBLAS's worker
threads keep spinning for about 0.1 s (OpenMP's for a shorter while), and a measurement that
starts inside that window shares the cores with them. Inside a step nothing pauses, so the
textbook loop's update, which follows its backward products, does pay for that spinning, as it
does in training (OPENBLAS_THREAD_TIMEOUT=4 in the environment makes those threads sleep at
once; the script reports that variable and never sets it). The machine's load is measured too:
on Linux, the CPU time other processes used during the measurements is reported, and a busy
machine is flagged, since on 2 cores any other job distorts every number here.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's nn, installed or not

import nn  # noqa: E402
from nn.blas import using_blas  # noqa: E402
from nn.data import default_workers  # noqa: E402
from nn.models import PAPER_HIDDEN, PAPER_INPUT, paper_mlp  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None

BATCH = 33
N_OUT = 25
LR = 0.05
QUICK_INPUT = PAPER_INPUT // 16
# Environment variables that change threading; reported, never set here.
THREAD_ENV = ["OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
              "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS"]


def environment():
    """Versions, cores and the thread pools (BLAS, OpenMP) loaded in this process."""
    pools = []
    if threadpoolctl is not None:
        for info in threadpoolctl.threadpool_info():
            pools.append({
                "user_api": info.get("user_api"),
                "internal_api": info.get("internal_api"),
                "version": info.get("version"),
                # OpenBLAS names the kernel set "architecture", MKL and BLIS a "corename".
                "architecture": info.get("architecture") or info.get("corename"),
                "num_threads": info.get("num_threads"),
                "filepath": info.get("filepath"),
            })
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "torch_num_threads": torch.get_num_threads() if torch is not None else None,
        "cpu_count": os.cpu_count(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "thread_env": {name: os.environ.get(name) for name in THREAD_ENV},
        "threadpools": pools if threadpoolctl is not None else None,
        "nn_blas_gemm": using_blas(),
    }


def make_batch(input_size, seed=0):
    """33 images in [0, 1) and multi-label targets (about 2.5 genres each), float32."""
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, input_size), dtype=np.float32)
    y = (rng.random((BATCH, N_OUT)) < 0.1).astype(np.float32)
    return x, y


class NNStep:
    """One step through nn's public API, timed in three parts (named prefix_forward, ...)."""

    def __init__(self, input_size, x, y, step_in_backward, prefix):
        self.model = paper_mlp(input_size=input_size, rng=0, dtype=np.float32)
        self.loss_fn = nn.BCELoss()
        self.opt = nn.SGD(self.model.parameters(), lr=LR, step_in_backward=step_in_backward)
        self.x, self.y, self.prefix = x, y, prefix

    def __call__(self):
        t0 = time.perf_counter()
        loss = self.loss_fn(self.model(self.x), self.y)
        t1 = time.perf_counter()
        self.model.backward(self.loss_fn.backward())
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad()
        t3 = time.perf_counter()
        p = self.prefix
        return loss, {f"{p}_forward": t1 - t0, f"{p}_backward": t2 - t1, f"{p}_update": t3 - t2}


class TorchStep:
    """The same step in PyTorch, starting from nn's weights (nn stores W as (in, out))."""

    def __init__(self, nn_model, x, y, in_backward=False):
        layers = []
        for layer in nn_model.layers:
            if isinstance(layer, nn.Linear):
                d, h = layer.weight.data.shape
                # skip_init: no random init of a 753 MB matrix that is overwritten right away.
                lin = torch.nn.utils.skip_init(torch.nn.Linear, d, h)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(layer.weight.data).T)
                    lin.bias.copy_(torch.from_numpy(layer.bias.data))
                layers.append(lin)
            elif isinstance(layer, nn.ReLU):
                layers.append(torch.nn.ReLU())
            elif isinstance(layer, nn.Sigmoid):
                layers.append(torch.nn.Sigmoid())
            else:
                raise TypeError(f"no torch counterpart for {layer!r}")
        self.model = torch.nn.Sequential(*layers)
        self.loss_fn = torch.nn.BCELoss()
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.key = "torch_in_backward_step" if in_backward else "torch_step"
        if not in_backward:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
            return
        self.opt = None
        per_param = {p: torch.optim.SGD([p], lr=LR) for p in self.model.parameters()}

        def step_now(p):
            per_param[p].step()
            per_param[p].zero_grad()

        for p in self.model.parameters():
            p.register_post_accumulate_grad_hook(step_now)

    def __call__(self):
        t0 = time.perf_counter()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad()
        value = loss.item()
        return value, {self.key: time.perf_counter() - t0}


class FloorStep:
    """The first layer's two products alone: X @ W, and X.T @ dY into a preallocated array."""

    def __init__(self, x, w):
        self.x, self.w = x, w  # w is nn's first-layer weight, only read here
        self.dy = np.random.default_rng(1).standard_normal((x.shape[0], w.shape[1]),
                                                           dtype=np.float32)
        self.out = np.empty_like(w)
        self.out.fill(0)  # touch every page now, not in the first timed product

    def __call__(self):
        t0 = time.perf_counter()
        self.x @ self.w
        t1 = time.perf_counter()
        np.matmul(self.x.T, self.dy, out=self.out)
        t2 = time.perf_counter()
        return None, {"floor_xw": t1 - t0, "floor_xtdy": t2 - t1, "floor": t2 - t0}


def check_float32(step):
    """Run one nn step layer by layer; name every array that is not float32 (none should be).

    Also checks the SGD update's lr * grad, whose dtype follows from the type of lr.
    """
    model, loss_fn = step.model, step.loss_fn
    found = []
    x = step.x
    for i, layer in enumerate(model.layers):
        x = layer(x)
        if x.dtype != np.float32:
            found.append(f"forward output of ({i}) {layer!r}: {x.dtype}")
    loss_fn(x, step.y)
    g = loss_fn.backward()
    if g.dtype != np.float32:
        found.append(f"BCELoss.backward(): {g.dtype}")
    for i in reversed(range(len(model.layers))):
        g = model.layers[i].backward(g)
        if g is None:
            break
        if g.dtype != np.float32:
            found.append(f"backward output of ({i}) {model.layers[i]!r}: {g.dtype}")
    for name, p in model.named_parameters():
        for what, dtype in (("data", p.data.dtype), ("grad", p.grad.dtype),
                            ("lr * grad", np.result_type(step.opt.lr, p.grad))):
            if dtype != np.float32:
                found.append(f"{name} {what}: {dtype}")
    step.opt.zero_grad()  # discard this step's gradients; the weights are left as they were
    return found


def _busy_cpu_seconds():
    """CPU seconds all processes have used since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds():
    t = os.times()
    return t.user + t.system


def summarize(samples):
    ms = [1e3 * s for s in samples]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
            "samples_ms": ms}


TIMES = {   # key: label in the printed table
    "nn_step": "nn step", "nn_forward": "  forward + loss",
    "nn_backward": "  backward, with SGD", "nn_update": "  step + zero_grad",
    "nn_textbook_step": "nn textbook step", "nn_textbook_forward": "  forward + loss",
    "nn_textbook_backward": "  backward", "nn_textbook_update": "  SGD step + zero_grad",
    "torch_step": "torch step", "torch_in_backward_step": "torch in-backward step",
    "floor": "floor", "floor_xw": "  X @ W", "floor_xtdy": "  X.T @ dY",
}


def run(input_size=PAPER_INPUT, repeats=7, warmup=2, settle=0.25, use_torch=True, log=print):
    """Measure everything; return the report as a dict (what --json writes)."""
    if use_torch and torch is None:
        log("torch is not installed: skipping the PyTorch column (pip install -e '.[torch]')")
        use_torch = False
    if use_torch:
        torch.set_num_threads(default_workers())   # the cores this process may use

    x, y = make_batch(input_size)
    textbook = NNStep(input_size, x, y, step_in_backward=False, prefix="nn_textbook")
    steps = {"nn": NNStep(input_size, x, y, step_in_backward=True, prefix="nn"),
             "nn_textbook": textbook}
    first_losses = {}
    if use_torch:
        steps["torch"] = TorchStep(textbook.model, x, y)
        steps["torch_in_backward"] = TorchStep(textbook.model, x, y, in_backward=True)
    steps["floor"] = FloorStep(x, textbook.model.layers[0].weight.data)
    not_float32 = check_float32(textbook)

    # Round-robin, starting each round one place further on, so that no measurement always
    # follows the same other one (BLAS and OpenMP threads keep spinning a while after a call).
    names = list(steps)
    times = {}
    busy0, own0, wall0 = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
    for r in range(warmup + repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            time.sleep(settle)
            loss, parts = steps[name]()
            if r == 0 and loss is not None:
                first_losses[name] = loss
            if r >= warmup:
                for key, seconds in parts.items():
                    times.setdefault(key, []).append(seconds)
    busy1, own1, wall1 = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
    load = {"wall_s": wall1 - wall0, "own_cpu_s": own1 - own0, "others_cpu_s": None}
    if busy0 is not None and busy1 is not None:
        load["others_cpu_s"] = max(0.0, (busy1 - busy0) - (own1 - own0))
    for p in ("nn", "nn_textbook"):
        times[f"{p}_step"] = [f + b + u for f, b, u in zip(
            times[f"{p}_forward"], times[f"{p}_backward"], times[f"{p}_update"])]

    summary = {key: summarize(times[key]) for key in TIMES if key in times}
    ratios = {}
    for p in ("nn", "nn_textbook"):
        step_ms = summary[f"{p}_step"]["median_ms"]
        ratios[f"{p}/floor"] = step_ms / summary["floor"]["median_ms"]
        ratios[f"{p}/torch"] = step_ms / summary["torch_step"]["median_ms"] if use_torch else None
    if use_torch:
        ratios["nn/torch_in_backward"] = (summary["nn_step"]["median_ms"]
                                          / summary["torch_in_backward_step"]["median_ms"])
    targets = {"nn/torch <= 0.5": ratios["nn/torch"] <= 0.5 if use_torch else None,
               "nn/floor <= 1.5": ratios["nn/floor"] <= 1.5}
    return {
        "config": {"input_size": input_size, "hidden": list(PAPER_HIDDEN), "n_out": N_OUT,
                   "batch": BATCH, "lr": LR, "dtype": "float32", "repeats": repeats,
                   "warmup": warmup, "settle_s": settle, "order": names},
        "environment": environment(),
        "times": summary,
        "ratios": ratios,
        "targets": targets,
        "load": load,
        "first_loss": first_losses,
        "not_float32": not_float32,
    }


def report(result, log=print):
    env, cfg = result["environment"], result["config"]
    log(f"paper MLP {cfg['input_size']} -> {' -> '.join(map(str, cfg['hidden']))} -> "
        f"{cfg['n_out']}, batch {cfg['batch']}, {cfg['dtype']}, SGD lr {cfg['lr']}; "
        f"median of {cfg['repeats']} after {cfg['warmup']} warmup, interleaved")
    log(f"python {env['python']}, numpy {env['numpy']}, torch {env['torch']}, "
        f"{env['cpu_count']} CPUs, torch threads {env['torch_num_threads']}")
    coretype = env["OPENBLAS_CORETYPE"]
    log(f"OPENBLAS_CORETYPE: {'set to ' + coretype if coretype else 'not set'}")
    threading = [f"{k}={v}" for k, v in env["thread_env"].items()
                 if v is not None and k != "OPENBLAS_CORETYPE"]
    if threading:
        log("threading variables set: " + ", ".join(threading))
    if env["threadpools"] is None:
        log("threadpoolctl is not installed: BLAS unknown")
    for pool in env["threadpools"] or []:
        log(f"  {pool['user_api']}: {pool['internal_api']} {pool['version']}, "
            f"{pool['architecture']}, {pool['num_threads']} threads  ({pool['filepath']})")
    log("nn's update inside backward: " + ("gemm in numpy's OpenBLAS" if env["nn_blas_gemm"]
                                            else "numpy row blocks (numpy's OpenBLAS not found)"))
    bad = result["not_float32"]
    log("nn step dtypes: float32 throughout" if not bad else
        "nn step dtypes: NOT float32: " + "; ".join(bad))
    losses = result["first_loss"]
    if "torch" in losses:
        log(f"first loss: nn {losses['nn']:.6f}, torch {losses['torch']:.6f}")

    log(f"{'':24}{'median':>10}{'min':>10}{'max':>10}   (ms)")
    for key, label in TIMES.items():
        t = result["times"].get(key)
        if t is None:
            log(f"{label:24}{'skipped':>10}")
            continue
        log(f"{label:24}{t['median_ms']:10.1f}{t['min_ms']:10.1f}{t['max_ms']:10.1f}")
    load = result["load"]
    if load["others_cpu_s"] is not None:
        share = load["others_cpu_s"] / load["wall_s"]
        log(f"other processes used {load['others_cpu_s']:.1f} CPU s during the "
            f"{load['wall_s']:.1f} s of measurements ({share:.2f} cores)"
            + ("  -- BUSY MACHINE: these numbers are distorted" if share > 0.05 else ""))
    ratios, targets = result["ratios"], result["targets"]
    for name, value in ratios.items():
        limit = next((t for t in targets if t.startswith(name + " ")), None)
        if value is None:
            log(f"{name}: skipped")
        elif limit is None:
            log(f"{name}: {value:.3f}")
        else:
            log(f"{name}: {value:.3f}  (target {limit.split()[-1]}: "
                f"{'met' if targets[limit] else 'MISSED'})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds, each one of every step (default 7, --quick 2)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed rounds first (default 2, --quick 1)")
    parser.add_argument("--input-size", type=int, default=None,
                        help=f"inputs per image (default {PAPER_INPUT}, --quick {QUICK_INPUT})")
    parser.add_argument("--settle", type=float, default=0.25,
                        help="seconds of pause before each measurement (default 0.25)")
    parser.add_argument("--quick", action="store_true",
                        help="a 16x smaller input and 2 repeats: seconds, for the tests")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    parser.add_argument("--json", metavar="OUT", help="also write the results to OUT as JSON")
    args = parser.parse_args(argv)

    quick = args.quick
    result = run(input_size=args.input_size or (QUICK_INPUT if quick else PAPER_INPUT),
                 repeats=args.repeats or (2 if quick else 7),
                 warmup=args.warmup if args.warmup is not None else (1 if quick else 2),
                 settle=args.settle,
                 use_torch=not args.no_torch)
    report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return result


if __name__ == "__main__":
    main()
