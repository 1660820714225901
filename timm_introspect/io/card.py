"""The model card of a saved introspective model, rendered from ``hub_cards/model_card.md``."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import timm
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..nets.registry import describe_net
from ..version import __version__
from .figures import ACCURACY_VS_ECE, RELIABILITY
from .hub import HeadLike

__all__ = ["model_card"]

#: the alt text of each picture of the card
FIGURE_TITLES = {ACCURACY_VS_ECE: "Accuracy vs ECE of each model", RELIABILITY: "Reliability diagrams"}


def _hub_dataset(dataset: str | None) -> str | None:
    """A Hub dataset id for the card's metadata; a local folder is named in the text alone."""
    if dataset and not Path(dataset).exists() and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", dataset):
        return dataset
    return None


def _md(value: object) -> str:
    """Text safe inside a Markdown table cell: no raw HTML, no cell or row breaks."""
    text = html.escape(str(value), quote=False)
    return " ".join(text.split()).replace("|", "\\|")


def _cell(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _md(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _h_training_text(record: dict | None) -> str | None:
    """The card's "H trained on" line from ``head.h_training`` (``None``: not recorded, no line); AugMix is named
    only when H trained on AugMix copies."""
    if not record:
        return None
    rows, images = record["rows"], record.get("images")
    text = f"r_x of {images:,} training images" if images is not None else f"r_x of {rows:,} rows of the caller's data"
    augmix = record.get("augmix") or {}
    copies = augmix.get("copies", 0)
    if not copies:
        return text
    return _md(
        f"{text} and {copies:,} AugMix {'copy' if copies == 1 else 'copies'} of each ({rows:,} rows; timm's AugMix "
        f"operations restricted to the AugMix paper's list: {', '.join(augmix.get('operations') or [])}; magnitude "
        f"{augmix.get('magnitude')}, width {augmix.get('width')}; each copy seeded by its image's pixels, seed "
        f"{augmix.get('seed')} and the copy number)")


def model_card(
    head: HeadLike,
    repo_id: str | None = None,
    model_name: str | None = None,
    metrics: dict[str, dict[str, dict[str, float]]] | None = None,
    dataset: str | None = None,
    license: str | None = None,
    figures: Sequence[str] | None = None,
) -> ModelCard:
    """The model card of ``head`` (see :meth:`IntrospectiveHead.generate_model_card` for the arguments).

    ``figures``: the PNG files saved beside the card (:func:`~timm_introspect.io.figures.card_figures`), shown
    with links relative to the repository.

    Library name, tags and pipeline tag come from the class's ``ModelHubMixin`` declaration.
    """
    metrics = metrics if metrics is not None else head.metrics
    dataset = dataset or head.dataset
    dataset = None if dataset is None else str(dataset)
    architecture = head.model.pretrained_cfg.get("architecture", type(head.model).__name__)
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else f"{architecture}-introspective")
    repo_id = repo_id or "<user>/<repo>"
    hub_dataset = _hub_dataset(dataset)
    results, metric_names, eval_results = [], [], []
    for split, per_model in metrics.items():
        for who, values in per_model.items():
            values = {m: v for m, v in values.items() if not isinstance(v, (dict, list))}  # numbers for the table
            results.append({"split": _md(split), "model": _md(who),
                            "cells": {_md(m): _cell(v) for m, v in values.items()}})
            for metric, value in values.items():
                if _md(metric) not in metric_names:
                    metric_names.append(_md(metric))
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                if metric == "count" or not numeric:  # a sample size, or no number: not in the model index
                    continue
                eval_results.append(EvalResult(
                    task_type="image-classification", dataset_type=hub_dataset or "custom",
                    dataset_name=f"{hub_dataset or Path(dataset or 'custom').name} ({split})", dataset_split=split,
                    metric_type=metric, metric_value=value, metric_name=f"{metric} ({who})",
                ))
    card_data = ModelCardData(**type(head)._hub_mixin_info.model_card_data.to_dict())
    card_data.license = license
    card_data.datasets = [hub_dataset] if hub_dataset else None
    card_data.model_name = model_name
    card_data.eval_results = eval_results or None
    template = resources.files("timm_introspect.hub_cards").joinpath("model_card.md").read_text()
    target = float(head.target_value)
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=model_name,
        repo_id=repo_id,
        architecture=architecture,
        cifar_stem=architecture.endswith("_cifar"),
        num_classes=head.num_classes,
        input_size=", ".join(map(str, head.input_size())),
        dataset=_md(dataset) if dataset else None,
        loss_name=head.loss.upper() if head.target != "M" else f"{head.loss.upper()}-M",
        target_text=f"M = {target:.4g}" if head.target == "M" else f"{target:g}",
        num_features=head.num_features,
        classifier_text=", ".join(f"{c.name}: {' x '.join(map(str, c.weight.shape))}" for c in head.classifiers),
        scale={"maxabs": "scaled to [-1, 1] per dimension (max-abs, clamped)", "standard": "standardized per dimension",
               "none": "not scaled"}[head.scaling],
        h_text=describe_net(head.introspective_net),
        h_training_text=_h_training_text(getattr(head, "h_training", None)),
        label_names=[_md(n) for n in head.label_names] if head.label_names else None,
        results=results,
        metric_names=metric_names,
        figures={name: FIGURE_TITLES.get(name, Path(name).stem) for name in figures or ()},
        timm_introspect_version=__version__,
        timm_version=timm.__version__,
    )
