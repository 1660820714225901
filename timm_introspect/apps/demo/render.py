"""What the page shows, as images and text: the maps over the image (the explain app's maps, drawn as its
figures draw them: ``jet`` at half opacity, each map scaled to [0, 1]), the top classes, the OOD verdict."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...errors import MissingDependencyError
from .session import DemoResult

__all__ = ["DISPLAY", "label_values", "map_gallery", "ood_text", "prediction_table", "shown_image"]

#: the side, in pixels, images and maps are drawn at (small inputs are enlarged to it)
DISPLAY = 192


def _jet():
    try:
        from matplotlib import colormaps
    except ImportError as err:
        raise MissingDependencyError(f"the demo's maps need matplotlib ({err}): pip install 'timm-introspect[demo]'") \
            from err
    return colormaps["jet"]


def _display_size(pixels: np.ndarray, side: int) -> tuple[int, int]:
    height, width = pixels.shape[:2]
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def shown_image(pixels: np.ndarray, side: int = DISPLAY) -> np.ndarray:
    """``pixels`` (uint8 ``(H, W, 3)``) enlarged or reduced to ``side`` pixels on the longer edge (bilinear)."""
    height, width = _display_size(pixels, side)
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))


def _overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    heat = _jet()(cam)[..., :3] * 255.0
    return np.clip((1 - alpha) * image.astype(np.float64) + alpha * heat, 0, 255).astype(np.uint8)


def map_gallery(result: DemoResult, side: int = DISPLAY, alpha: float = 0.5) -> list[tuple[np.ndarray, str]]:
    """Grad-CAM ("why P?") and "why P, rather than Q?" for every Q but P, over the image, with captions ("why P?
    p=...", "rather than Q (p(Q))", f's probabilities)."""
    explanation = result.explanation
    image = shown_image(result.pixels, side)
    size = image.shape[:2]
    gcam = explanation.maps("grad_cam", size)[0].float().cpu().numpy()
    contrastive = explanation.maps("contrastive", size)[0].float().cpu().numpy()
    probs = explanation.probabilities[0]
    p = int(explanation.prediction[0])
    name = explanation.class_name(p)
    out = [(_overlay(image, gcam, alpha), f"why {name}? p={float(probs[p]):.2f}")]
    for k, q in enumerate(explanation.contrast[0].tolist()):
        if q != p:  # the caption is short enough for a thumbnail; the gallery's label asks the whole question
            out.append((_overlay(image, contrastive[k], alpha),
                        f"rather than {explanation.class_name(q)} ({float(probs[q]):.2f})"))
    return out


def label_values(top: list[tuple[str, float]] | None) -> dict[str, float] | None:
    """A top-k list as the ``{class: probability}`` a Gradio ``Label`` shows."""
    return None if top is None else dict(top)


def _cell(top: list[tuple[str, float]] | None, rank: int) -> str:
    if top is None:
        return "-"
    name, p = top[rank]
    return f"{name} {p:.4f}"


def prediction_table(result: DemoResult) -> str:
    """The top classes of f, f+TS and H side by side with their probabilities (4 decimals), as Markdown."""
    pred = result.prediction
    t = f"f+TS (T={pred.temperature:.3f})" if pred.temperature is not None else "f+TS"
    rows = ["| rank | f | " + t + " | H |", "|---|---|---|---|"]
    for rank in range(len(pred.f)):
        rows.append(f"| {rank + 1} | {_cell(pred.f, rank)} | {_cell(pred.f_ts, rank)} | {_cell(pred.h, rank)} |")
    if pred.f_ts is None:
        rows.append("\nf+TS needs f's temperature, fitted on held-out images this model does not record or that "
                    "cannot be loaded.")
    return "\n".join(rows)


def ood_text(result: DemoResult) -> str:
    """The OOD score and what it means against the threshold, as Markdown."""
    pred = result.prediction
    score = f"**OOD score {pred.ood_score:.4f}** (the energy of H, -logsumexp of H's logits: higher is more unusual)"
    if pred.ood_threshold is None:
        return (f"{score}. No threshold: it is set at 95 % of the model's own held-out in-distribution images, "
                "which this model does not record (or which cannot be loaded).")
    verdict = ("**out of distribution**: above" if pred.is_ood else "**in distribution**: at or below")
    return (f"{score}. Threshold {pred.ood_threshold:.4f}: 95 % of the model's own held-out in-distribution images "
            f"score at or below it. This image looks {verdict} the threshold.")
