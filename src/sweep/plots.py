"""Figures a run or a sweep logs. Built on matplotlib's object API (no pyplot state), so they
render off the training thread's back and never need closing."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure


def learning_curves(history: Mapping[str, list[float]]) -> Figure:
    """Train and validation curves of each metric, side by side, over epochs."""
    metrics = sorted(k for k in history if not k.startswith("val_") and f"val_{k}" in history)
    metrics = metrics or sorted(history)
    fig = Figure(figsize=(5 * max(len(metrics), 1), 4), layout="constrained")
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=False):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            if key in history:
                values = history[key]
                ax.plot(range(1, len(values) + 1), values, style, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def attention_heatmaps(
    weights: np.ndarray, tokens: np.ndarray, vocabulary: list[str], *, max_tokens: int = 40
) -> Figure:
    """Who attends to whom in a few reviews, with the words on the axes (padding dropped)."""
    fig = Figure(figsize=(7 * len(weights), 7), layout="constrained")
    axes = fig.subplots(1, max(len(weights), 1), squeeze=False)[0]
    for ax, w, t in zip(axes, weights, tokens, strict=False):
        real = np.flatnonzero(t != 0)[-max_tokens:]
        words = [vocabulary[i] if i < len(vocabulary) else "<oov>" for i in t[real]]
        image = ax.imshow(w[np.ix_(real, real)], cmap="viridis", vmin=0.0)
        ax.set_xticks(range(len(words)), words, rotation=90, fontsize=6)
        ax.set_yticks(range(len(words)), words, fontsize=6)
        ax.set_xlabel("attended to (key)")
        ax.set_ylabel("attending (query)")
        fig.colorbar(image, ax=ax, shrink=0.6)
    return fig
