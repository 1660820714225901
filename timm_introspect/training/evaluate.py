"""Evaluating f, f with temperature scaling and H on any data: accuracy, ECE, MCE, NLL, Brier.

>>> metrics = evaluate_head(head, test_loader, calibration=heldout_loader)   # doctest: +SKIP
>>> metrics["H"]["ece"], metrics["f+TS"]["ece"]                              # doctest: +SKIP

Every image is counted once under ``accelerate launch`` (a ``DataLoader`` is sharded across processes and
gathered back with ``gather_for_metrics``); other iterables are read whole by every process.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from ..core.introspect import eval_mode
from ..core.metrics import classification_metrics, reliability_bins
from ..data.images import batch_images, batch_labels
from ..errors import DataError
from ..log import tqdm
from ..model.head import IntrospectiveHead
from .calibrate import fit_calibration

__all__ = ["evaluate_head", "predict"]


@torch.no_grad()
def predict(model: nn.Module, data: Any, accelerator: Accelerator | None = None,
            progress: bool = True) -> dict[str, torch.Tensor]:
    """Logits over ``data`` (re-iterable ``(images, labels)`` batches), gathered in data order (float32, CPU).

    For an :class:`IntrospectiveHead`: ``{"f": f's logits, "H": H's logits, "labels": ...}``; for a plain
    classifier f: ``{"f": ..., "labels": ...}``.
    """
    accelerator = accelerator or Accelerator()
    is_head = isinstance(model, IntrospectiveHead)
    model = model.to(accelerator.device).eval()
    sharded = isinstance(data, DataLoader)
    loader = accelerator.prepare(data) if sharded else data
    out: dict[str, list[torch.Tensor]] = {"f": [], "H": [], "labels": []} if is_head else {"f": [], "labels": []}
    show = progress and accelerator.is_local_main_process
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not show):
        x, y = batch_images(batch).to(accelerator.device), batch_labels(batch)
        if y is None:
            raise DataError("evaluation needs labels: yield (images, labels) batches, or dicts with 'label'")
        if is_head:
            o = model(x)
            logits = (o.base_logits, o.logits)
        else:
            with eval_mode(model):
                logits = (model(x),)
        y = y.to(accelerator.device)
        gathered = accelerator.gather_for_metrics((*logits, y)) if sharded else (*logits, y)
        for key, t in zip(out, gathered, strict=True):
            out[key].append(t.cpu() if key == "labels" else t.float().cpu())
    if not out["labels"]:
        raise DataError("the data yielded no images: there is nothing to evaluate")
    return {k: torch.cat(v) for k, v in out.items()}


def evaluate_head(head: IntrospectiveHead | nn.Module, data: Any, calibration: Any | None = None,
                  split: str | None = None, accelerator: Accelerator | None = None,
                  progress: bool = True) -> dict[str, dict[str, float]]:
    """Accuracy, ECE, MCE, NLL and Brier of f and H (or of f alone, for a plain classifier) on ``data``.

    Args:
        head: an introspective model (or a plain timm classifier f).
        data: labeled test images, any re-iterable of ``(images, labels)`` batches preprocessed for f.
        calibration: held-out labeled images neither f nor H trained on: f's temperature T is fitted on them
            (NLL) and ``"f+TS"`` (f's logits / T) is reported too; for an introspective model, T and the OOD
            threshold on H's energy (:func:`~timm_introspect.training.calibrate.fit_calibration`) are recorded in
            ``head.fitted_calibration`` (saved with the model, read by :func:`timm_introspect.predict_images`).
        split: a name for ``data`` (e.g. ``"test"``): the metrics are recorded in ``head.metrics[split]``, which
            the model card shows.
        accelerator: to share one (default: a new ``Accelerator()``).
        progress: show progress bars.

    Returns:
        ``{"f": {...}, "f+TS": {...}, "H": {...}}`` (the keys that apply). With ``split``, the bins of each one's
        reliability diagram (:func:`~timm_introspect.core.metrics.reliability_bins`) go to ``head.reliability[split]``.
    """
    accelerator = accelerator or Accelerator()
    logits = predict(head, data, accelerator, progress)
    labels = logits["labels"]
    scored = {"f": logits["f"]}  # each model's logits on data
    if calibration is not None:
        held = predict(head, calibration, accelerator, progress)
        fitted = fit_calibration(held["f"], held["labels"], held.get("H"))
        scored["f+TS"] = logits["f"] / fitted.temperature
        if isinstance(head, IntrospectiveHead):
            head.fitted_calibration = fitted.to_dict()
    if "H" in logits:
        scored["H"] = logits["H"]
    metrics = {who: classification_metrics(z, labels) for who, z in scored.items()}
    if split is not None and isinstance(head, IntrospectiveHead):
        head.metrics = {**head.metrics, split: metrics}
        head.reliability = {**head.reliability, split: {who: reliability_bins(z, labels) for who, z in scored.items()}}
    return metrics
