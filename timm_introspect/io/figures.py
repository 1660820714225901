"""The model card's pictures: accuracy vs ECE of every evaluated model, and their reliability diagrams.

Drawn from what a head records (``head.metrics``: ``{split: {model: {metric: value}}}``; ``head.reliability``:
``{split: {model: reliability_bins}}``), for whatever models those hold (f, f+TS, H, and any added later), with
matplotlib's Agg canvas (the ``[bench]`` extra; no ``pyplot`` state, no display). Without matplotlib, or without
results, there are no pictures, and the card simply shows none.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["ACCURACY_VS_ECE", "RELIABILITY", "card_figures"]

ACCURACY_VS_ECE = "accuracy_vs_ece.png"
RELIABILITY = "reliability.png"
#: the usual colours of the three models every evaluation has; others take matplotlib's cycle
COLORS = {"f": "tab:red", "f+TS": "tab:orange", "H": "tab:blue"}

log = logging.getLogger(__name__)


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.debug("matplotlib is not installed (pip install 'timm-introspect[bench]'): the model card has no figures")
        return None
    return Figure


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})  # no version stamp: reproducible bytes
    return buffer.getvalue()


def _color(model: str, models: list[str]) -> str:
    return COLORS.get(model, f"C{(models.index(model) + 3) % 10}")


def accuracy_vs_ece(figure: Any, metrics: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> bytes | None:
    """One point per split and model with a numeric accuracy and ECE; ``None`` when there is none."""
    points = [(split, model, v["accuracy"], v["ece"]) for split, per_model in metrics.items()
              for model, v in per_model.items()
              if isinstance(v, Mapping) and _number(v.get("accuracy")) and _number(v.get("ece"))]
    if not points:
        return None
    models = list(dict.fromkeys(p[1] for p in points))
    splits = list(dict.fromkeys(p[0] for p in points))
    markers = "osD^vP*X"
    fig = figure(figsize=(5.2, 4))
    ax = fig.subplots()
    for split, model, acc, ece in points:
        ax.scatter(acc, ece, s=48, color=_color(model, models), marker=markers[splits.index(split) % len(markers)],
                   label=f"{model} ({split})" if len(splits) > 1 else model, edgecolor="black", linewidth=0.5)
    ax.set(xlabel="accuracy", ylabel="ECE (10 bins)", title="accuracy vs calibration (lower ECE is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _bins_ok(bins: Any) -> bool:
    return isinstance(bins, Mapping) and all(isinstance(bins.get(k), list) for k in ("confidence", "accuracy",
                                                                                     "count")) and (
        len(bins["confidence"]) == len(bins["accuracy"]) == len(bins["count"]) > 0)


def reliability(figure: Any, diagrams: Mapping[str, Mapping[str, Any]],
                metrics: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> bytes | None:
    """Reliability diagrams: a row per split, a panel per model (accuracy per confidence bin against the
    diagonal); ``None`` when nothing records its bins."""
    rows = [(split, [(m, b) for m, b in per_model.items() if _bins_ok(b)]) for split, per_model in diagrams.items()
            if isinstance(per_model, Mapping)]
    rows = [(split, panels) for split, panels in rows if panels]
    if not rows:
        return None
    cols = max(len(panels) for _, panels in rows)
    models = list(dict.fromkeys(m for _, panels in rows for m, _ in panels))
    fig = figure(figsize=(3 * cols, 3 * len(rows)))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (split, panels) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(panels):
                ax.axis("off")
                continue
            model, bins = panels[c]
            n = len(bins["count"])
            edges = [i / n for i in range(n)]
            filled = [i for i in range(n) if bins["count"][i] > 0]
            ax.bar([edges[i] for i in filled], [bins["accuracy"][i] for i in filled], width=1 / n, align="edge",
                   color=_color(model, models), alpha=0.8, edgecolor="black", linewidth=0.5, label="accuracy")
            ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
            ax.plot([bins["confidence"][i] for i in filled], [bins["accuracy"][i] for i in filled], "k.", markersize=4)
            values = (metrics.get(split) or {}).get(model)
            ece = values.get("ece") if isinstance(values, Mapping) else None
            title = f"{model}, {split}" + (f": ECE {ece:.3f}" if _number(ece) else "")
            ax.set(xlim=(0, 1), ylim=(0, 1), title=title, xlabel="confidence", ylabel="accuracy" if c == 0 else None)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def card_figures(metrics: Mapping[str, Any] | None, diagrams: Mapping[str, Any] | None) -> dict[str, bytes]:
    """The card's PNG files by name (:data:`ACCURACY_VS_ECE`, :data:`RELIABILITY`), for those the results allow;
    empty without matplotlib."""
    if not metrics and not diagrams:
        return {}
    figure = _figure_class()
    if figure is None:
        return {}
    metrics = {s: m for s, m in (metrics or {}).items() if isinstance(m, Mapping)}
    out = {ACCURACY_VS_ECE: accuracy_vs_ece(figure, metrics), RELIABILITY: reliability(figure, diagrams or {}, metrics)}
    return {name: png for name, png in out.items() if png is not None}
