"""Plots for the examples. matplotlib is an optional extra: without it, say how to get it."""

import sys
import textwrap
from pathlib import Path

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        print("plots need matplotlib: pip install -e .[plots]", file=sys.stderr)
        return None
    matplotlib.use("Agg")  # files only, no screen needed
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path):
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def plot_curves(curves, path, title="", ylabel="", xlabel="epoch"):
    """One line per {name: values}; values[i] is drawn at x = i + 1. Returns the path or None."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_genre_bars(series, labels, path, title="", ylabel=""):
    """Grouped bars: one group per label (a genre), one bar per {name: values} in each group.
    NaN values (a genre with no positive poster) get no bar. Returns the path or None."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=90)
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, np.nan_to_num(values), width,
               label=name)
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_poster_predictions(images, true_genres, predictions, path, columns=5):
    """Posters in a grid, each with its top genres and probabilities written underneath.

    images: uint8 (H, W, 3) arrays of one size; true_genres: per poster a list of genre names,
    or None when unknown; predictions: per poster [(genre, probability), ...], best first.
    A predicted genre that is a true one is drawn in bold green. Returns the path, or None
    without matplotlib. Posters are copyrighted: write this into a run folder, never docs/.
    """
    plt = _pyplot()
    if plt is None:
        return None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    truth_lines = [[] if t is None else textwrap.wrap("true: " + ", ".join(t), 32)
                   for t in true_genres]
    known = any(t is not None for t in true_genres)
    n_lines = max(len(p) + len(t) for p, t in zip(predictions, truth_lines))
    cols, rows = min(columns, len(images)), -(-len(images) // columns)
    # Laid out in inches, so the text under each poster always has its room.
    cell_w, img_w = 1.9, 1.7
    img_h = img_w * images[0].shape[0] / images[0].shape[1]
    text_h, top = 0.08 + 0.16 * n_lines, 0.3 if known else 0.1
    fig_w, fig_h = cols * cell_w, top + rows * (img_h + text_h)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=90)
    for i, (image, truth, top_k, below) in enumerate(zip(images, true_genres, predictions,
                                                          truth_lines)):
        r, c = divmod(i, cols)
        ax = fig.add_axes([(c * cell_w + (cell_w - img_w) / 2) / fig_w,
                           (fig_h - top - r * (img_h + text_h) - img_h) / fig_h,
                           img_w / fig_w, img_h / fig_h])
        ax.imshow(image)
        ax.axis("off")
        lines = [(f"{genre} {prob:.2f}", truth is not None and genre in truth)
                 for genre, prob in top_k]
        lines += [(line, False) for line in below]
        for k, (text, hit) in enumerate(lines):
            ax.annotate(text, (0.5, 0), xycoords="axes fraction", xytext=(0, -3 - 11.5 * k),
                        textcoords="offset points", ha="center", va="top", fontsize=8,
                        color="darkgreen" if hit else "black",
                        fontweight="bold" if hit else "normal")
    if known:
        fig.suptitle("top genres; bold green = a true genre", fontsize=9,
                     y=1 - 0.05 / fig_h, va="top")
    return _save(plt, fig, path)
