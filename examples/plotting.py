"""Plots for the examples. matplotlib is an optional extra: without it, say how to get it."""

import sys


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        print("plots need matplotlib: pip install -e .[plots]", file=sys.stderr)
        return None
    matplotlib.use("Agg")  # files only, no screen needed
    import matplotlib.pyplot as plt
    return plt


def plot_curves(curves, path, title="", ylabel="", xlabel="epoch"):
    """One line per {name: values}; values[i] is drawn at x = i + 1. Returns the path or None."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")
    return path
