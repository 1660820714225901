"""Plots of the benchmarks and the main job (matplotlib, the ``[bench]`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.outputs import save_figure
from ..errors import MissingDependencyError

__all__ = ["corruption_plots", "pyplot"]


def pyplot():
    """``matplotlib.pyplot`` with a file backend; a clear error naming the extra when it is missing."""
    try:
        import matplotlib
    except ImportError as err:
        raise MissingDependencyError("plots need matplotlib: pip install 'timm-introspect[bench]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def corruption_plots(results: dict, out: str | Path) -> list[str]:
    """PNGs in ``out``: accuracy vs ECE (paper Fig. 2), accuracy per corruption (Fig. 3a), ECE vs severity
    (Fig. 3b / 8). Returns their file names."""
    plt = pyplot()
    out = Path(out)

    models = tuple(results.get("models", ("f", "f+TS", "H")))
    palette = {"f": "tab:red", "f+TS": "tab:orange", "f+ETS": "tab:olive", "DAC+TS": "tab:purple",
               "DAC+ETS": "tab:brown", "H": "tab:blue"}
    colors = {m: palette.get(m, f"C{i}") for i, m in enumerate(models)}
    sets = results["corrupted"]
    names = []

    fig, ax = plt.subplots(figsize=(5, 4))
    for m in models:
        ax.scatter([s[m]["accuracy"] for s in sets], [s[m]["ece"] for s in sets], s=12, alpha=0.6, label=m, c=colors[m])
    ax.set(xlabel="accuracy", ylabel="ECE (10 bins)", title="CIFAR-10-C: accuracy vs calibration")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "accuracy_vs_ece.png", dpi=120)
    plt.close(fig)
    names.append("accuracy_vs_ece.png")

    corruptions = sorted({s["corruption"] for s in sets})
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(corruptions)), 4))
    width = 0.8 / len(models)
    for k, m in enumerate(models):
        means = [np.mean([s[m]["accuracy"] for s in sets if s["corruption"] == c]) for c in corruptions]
        ax.bar(np.arange(len(corruptions)) + k * width, means, width, label=m, color=colors[m])
    ax.set_xticks(np.arange(len(corruptions)) + width, corruptions, rotation=45, ha="right")
    ax.set(ylabel="accuracy (mean over severities)", title="accuracy per corruption")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "accuracy_per_corruption.png", dpi=120)
    plt.close(fig)
    names.append("accuracy_per_corruption.png")

    cols = min(4, len(corruptions))
    rows = int(np.ceil(len(corruptions) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.5 * rows), squeeze=False)
    for ax, c in zip(axes.flat, corruptions, strict=False):
        chosen = sorted((s for s in sets if s["corruption"] == c), key=lambda s: s["severity"])
        for m in models:
            ax.plot([s["severity"] for s in chosen], [s[m]["ece"] for s in chosen], marker="o", label=m, c=colors[m])
        ax.set(title=c, xlabel="severity", ylabel="ECE")
    for ax in list(axes.flat)[len(corruptions):]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.tight_layout()
    save_figure(fig, out / "ece_vs_severity.png", dpi=120)
    plt.close(fig)
    names.append("ece_vs_severity.png")
    return names
