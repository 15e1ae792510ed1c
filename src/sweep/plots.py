"""Figures a run or a sweep logs. Built on matplotlib's object API (no pyplot state), so they
render off the training thread's back and never need closing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
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


def _numeric(column: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Positions to plot a column at, and category labels when it is not numeric."""
    as_numbers = pd.to_numeric(column, errors="coerce")
    if as_numbers.notna().all():
        return as_numbers.to_numpy(float), None
    words = column.map(str)  # None as "None" (astype(str) may keep it missing)
    labels = sorted(words.unique())
    return words.map(labels.index).to_numpy(float), labels


def objective_by_hyperparameter(
    table: pd.DataFrame, hyperparameters: list[str], objective: str
) -> Figure:
    """The objective of every finished trial against each hyperparameter."""
    fig = Figure(figsize=(4.5 * max(len(hyperparameters), 1), 4), layout="constrained")
    axes = fig.subplots(1, max(len(hyperparameters), 1), squeeze=False)[0]
    for ax, hp in zip(axes, hyperparameters, strict=False):
        x, labels = _numeric(table[hp])
        ax.scatter(x, table[objective], s=40, alpha=0.8)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        elif len(x) and x.min() > 0 and x.max() / x.min() >= 16:
            ax.set_xscale("log")
        ax.set_xlabel(hp)
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
    return fig


def parallel_coordinates(table: pd.DataFrame, hyperparameters: list[str], objective: str) -> Figure:
    """One line per trial across every hyperparameter, coloured by the objective."""
    columns = [*hyperparameters, objective]
    fig = Figure(figsize=(2.2 * len(columns) + 2, 4.5), layout="constrained")
    ax = fig.subplots()
    scaled, ticks = [], []
    for column in columns:
        x, labels = _numeric(table[column])
        low, high = float(np.min(x)), float(np.max(x))
        scaled.append((x - low) / (high - low) if high > low else np.full_like(x, 0.5))
        ticks.append(labels or [f"{low:.4g}", f"{high:.4g}"])
    lines = np.stack(scaled, axis=1)
    score = table[objective].to_numpy(float)
    span = float(np.ptp(score)) or 1.0
    colours = matplotlib.colormaps["viridis"]((score - score.min()) / span)
    for line, colour in zip(lines, colours, strict=True):
        ax.plot(range(len(columns)), line, color=colour, alpha=0.85)
    ax.set_xticks(
        range(len(columns)),
        [f"{c}\n[{', '.join(t)}]" for c, t in zip(columns, ticks, strict=True)],
        fontsize=7,
    )
    ax.set_yticks([])
    ax.set_title(f"trials coloured by {objective} (yellow = best)")
    return fig


def cost_pareto(table: pd.DataFrame, objective: str, front_by: dict[str, pd.Series]) -> Figure:
    """The objective against seconds per epoch and parameter count, Pareto front marked."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, len(front_by), squeeze=False)[0]
    for ax, (cost, front) in zip(axes, front_by.items(), strict=True):
        ax.scatter(table[cost], table[objective], s=35, alpha=0.6, label="trial")
        edge = table[front].sort_values(cost)
        ax.plot(edge[cost], edge[objective], "-o", color="crimson", label="Pareto front")
        for _, row in edge.iterrows():
            ax.annotate(
                str(row["trial_id"]),
                (row[cost], row[objective]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xlabel(cost)
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


#: One panel of `knob_panels`: a knob, its values in order, each value's seeds, its estimate.
Panel = tuple[str, Sequence[str], Sequence[Sequence[float]], Sequence[float]]


def knob_panels(panels: Sequence[Panel], ylabel: str) -> Figure:
    """Per knob: every seed's score at each value (dots) and the model's estimate (bar)."""
    fig = Figure(figsize=(4.5 * max(len(panels), 1), 4), layout="constrained")
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (knob, values, seeds, estimates) in zip(axes, panels, strict=False):
        for x, (ys, estimate) in enumerate(zip(seeds, estimates, strict=True)):
            ax.plot([x] * len(ys), ys, "o", color="tab:blue", alpha=0.6)
            ax.hlines(estimate, x - 0.3, x + 0.3, color="tab:red", linewidth=2)
        ax.set_xticks(range(len(values)), [v[:18] for v in values], rotation=30, ha="right")
        ax.set_title(knob)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    return fig


def diagnostics(
    scales: Sequence[str],
    by_scale: Mapping[str, Sequence[Sequence[float]]],
    saturation: Sequence[float],
    score: Sequence[float],
    ylabel: str,
) -> Figure:
    """Attention entropy and saturation per scale value (left panels, when the scale was
    searched) and saturation against the objective (right)."""
    fig = Figure(figsize=(4.5 * (len(by_scale) + 1), 4), layout="constrained")
    axes = fig.subplots(1, len(by_scale) + 1, squeeze=False)[0]
    for ax, (metric, seeds) in zip(axes, by_scale.items(), strict=False):
        for x, ys in enumerate(seeds):
            ax.plot([x] * len(ys), ys, "o", color="tab:purple", alpha=0.6)
        ax.set_xticks(range(len(scales)), list(scales), rotation=30, ha="right")
        ax.set_title(f"{metric} by scale")
        ax.grid(alpha=0.3)
    axes[-1].plot(saturation, score, "o", alpha=0.6)
    axes[-1].set_xlabel("attention_saturation")
    axes[-1].set_ylabel(ylabel)
    axes[-1].set_title("does saturation predict the score?")
    axes[-1].grid(alpha=0.3)
    return fig


def tuning_curve(
    n: Sequence[int],
    estimate: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    objective: str,
) -> Figure:
    """The expected best of n trials, with its band, on a log axis of n."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.fill_between(n, low, high, alpha=0.25, label="band")
    ax.plot(n, estimate, "-o", markersize=3, label="expected best (unbiased)")
    ax.set_xscale("log")
    ax.set_xlabel("trials")
    ax.set_ylabel(f"best {objective}")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
