"""Small plots of measured results. Each takes `ax=None`, returns the Axes and writes no file.

Used in every notebook: `ftkit.plot_losses(result)`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

FIGSIZE = (5.5, 3.5)  # small: notebooks show two side by side


def _axes(ax):
    """The given Axes, or a new small figure's."""
    if ax is None:
        _, ax = plt.subplots(figsize=FIGSIZE)
    return ax


def plot_losses(results, ax=None, title: str = "Loss: train vs validation"):
    """Train (thin) and validation (thick, dots) loss per step of one Result or a {label: Result} dict; a dotted line
    at the step early stopping restored, if any."""
    ax = _axes(ax)
    results = results if isinstance(results, dict) else {results.method: results}
    for i, (label, result) in enumerate(results.items()):
        color = f"C{i}"
        ax.plot(*result.losses("train_loss"), color=color, alpha=0.45, lw=1, label=f"{label} train")
        steps, values = result.losses("eval_loss")
        if steps:
            ax.plot(steps, values, "o-", color=color, lw=2, ms=4, label=f"{label} validation")
        if result.restored_step is not None:  # early stopping: the step whose weights the run kept
            ax.axvline(result.restored_step, color=color, ls=":", lw=1)
    ax.set(xlabel="step", ylabel="loss (cross-entropy)", title=title)
    ax.legend(fontsize=7)
    return ax


def plot_lr(results, ax=None, title: str = "Learning-rate schedule"):
    """Learning rate per step of one Result or a {label: Result} dict."""
    ax = _axes(ax)
    results = results if isinstance(results, dict) else {results.method: results}
    for label, result in results.items():
        ax.plot(*result.losses("learning_rate"), label=label)
    ax.set(xlabel="step", ylabel="learning rate", title=title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend(fontsize=7)
    return ax


def plot_bars(values: dict, ax=None, title: str = "", ylabel: str = "", fmt: str = "{:.3g}"):
    """One bar per label, its value written on top: {label: number}."""
    ax = _axes(ax)
    labels, numbers = list(values), list(values.values())
    bars = ax.bar(labels, numbers, color=[f"C{i}" for i in range(len(labels))])
    ax.bar_label(bars, labels=[fmt.format(v) for v in numbers], fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    ax.margins(y=0.15)
    return ax


def plot_stacked(parts: dict, ax=None, title: str = "", ylabel: str = "MB", scale: float = 1e6):
    """Stacked bars: {bar label: {part: bytes}}, e.g. memory per method split into weights, gradients, ..."""
    ax = _axes(ax)
    labels = list(parts)
    names = list(dict.fromkeys(name for p in parts.values() for name in p))
    bottoms = [0.0] * len(labels)
    for i, name in enumerate(names):
        heights = [parts[label].get(name, 0) / scale for label in labels]
        ax.bar(labels, heights, bottom=bottoms, label=name, color=f"C{i}")
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=7)
    return ax
