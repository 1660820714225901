"""One PNG per image: the input, Grad-CAM ("why P?") and a contrastive map per Q ("why P, rather than Q?").

matplotlib is imported when a figure is drawn (:func:`timm_introspect.jobs.plots.pyplot`), never at import.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch

from ...data.outputs import save_figure
from ...errors import MissingDependencyError
from ...jobs.plots import pyplot
from .result import Explanation

__all__ = ["denormalize", "explanation_figure", "figure_pyplot"]


def figure_pyplot():
    """``matplotlib.pyplot``, or an error naming the ``[explain]`` extra."""
    try:
        return pyplot()
    except MissingDependencyError as err:
        raise MissingDependencyError("explanation figures need matplotlib: pip install 'timm-introspect[explain]'") \
            from err


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalized images ``(..., 3, H, W)`` back to [0, 1] pixels for display."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)


def _wrap(text: str, width: int = 24) -> str:
    return "\n".join(textwrap.wrap(text, width))


def explanation_figure(explanation: Explanation, index: int, image: torch.Tensor, path: str | Path,
                       title: str | None = None, columns: int = 6, skip_prediction: bool = True,
                       alpha: float = 0.5, dpi: int = 110) -> Path:
    """Write the grid of image ``index`` of ``explanation`` to ``path`` (PNG).

    Args:
        image: the input as shown, ``(3, H, W)`` in [0, 1] (see :func:`denormalize`).
        title: the figure's title (default: the prediction and how the maps were made).
        columns: panels per row.
        skip_prediction: leave out "why P, rather than P?" (when Q runs over every class).
    """
    plt = figure_pyplot()
    probs = explanation.probabilities[index]
    p = int(explanation.prediction[index])
    size = tuple(image.shape[-2:])
    gcam = explanation.maps("grad_cam", size)[index]
    contrastive = explanation.maps("contrastive", size)[index]
    titles = explanation.titles(index)
    panels = [(None, "input\n" + _wrap(f"predicted {explanation.class_name(p)}") + f"\np={probs[p]:.2f}")]
    panels.append((gcam, _wrap(titles[0] + " (Grad-CAM)")))
    for k, q in enumerate(explanation.contrast[index].tolist()):
        if skip_prediction and q == p:
            continue
        panels.append((contrastive[k], _wrap(titles[k + 1]) + f"\np({explanation.class_name(q)})={probs[q]:.2f}"))
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols + 0.9, 2.8 * rows + 0.4), squeeze=False,
                             layout="constrained")
    shown = image.permute(1, 2, 0).cpu().float().numpy()
    heat = None
    for ax, (cam, text) in zip(axes.flat, panels, strict=False):
        ax.imshow(shown, interpolation="bilinear")
        if cam is not None:
            heat = ax.imshow(cam.cpu().float().numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1,
                             interpolation="bilinear")
        ax.set_title(text, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    plan = explanation.plan
    grid = "x".join(map(str, plan.layout.grid))
    how = f"{plan.method} at {plan.layer} ({grid} map)"
    fig.suptitle(title or f"{how}; maps scaled to [0, 1] each", fontsize=10)
    if heat is not None:
        bar = fig.colorbar(heat, ax=axes.ravel().tolist(), shrink=0.8, fraction=0.03, pad=0.01)
        bar.set_label("relevance (each map scaled to [0, 1])", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=dpi)
    plt.close(fig)
    return path
