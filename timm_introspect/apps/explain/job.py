"""The ``timm-introspect explain`` job: load f, explain image files, write one PNG grid per image.

    timm-introspect explain --model runs/main/introspective --images cat.png ship.jpg --contrast all --out maps/
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from timm.data import resolve_model_data_config
from torch import nn

from ...data.images import make_transform
from ...errors import CheckpointError, DataError, InvalidArgumentError
from ...io.checkpoint import TIMM_CONFIG, TIMM_WEIGHTS, hub_download, read_timm_config
from ...io.hub import INTROSPECTION_CONFIG, build_backbone
from .contrast import Contrast
from .explainer import Explainer
from .figure import denormalize, explanation_figure, figure_pyplot

__all__ = ["explain_images", "load_classifier"]


def _hub_file(repo: str, name: str) -> Path | None:
    """``name`` of the Hub repo (``hf-hub:<repo>``), ``None`` when the repo lacks it (the package's one downloader)."""
    return hub_download(repo, name, folder_meant=False)


def load_classifier(source: str | Path, checkpoint: str | Path | None = None) -> tuple[nn.Module, list[str] | None]:
    """f and its class names, from a folder written by ``IntrospectiveHead.save_pretrained`` or
    ``train-backbone``, from ``hf-hub:<repo>`` (either kind), or from a timm architecture name with a
    ``.safetensors`` ``checkpoint`` (:func:`~timm_introspect.io.backbones.resolve_backbone`). Only safetensors
    are read."""
    from ...io.backbones import resolve_backbone
    from ...model.head import IntrospectiveHead
    from ...training.pipeline import load_backbone

    source = str(source)
    if checkpoint is not None or not (source.startswith(("hf-hub:", "hf_hub:")) or Path(source).is_dir()):
        model = resolve_backbone(source, checkpoint)  # an architecture name (or nothing): it says what to pass
        return model, (model.pretrained_cfg or {}).get("label_names")
    if source.startswith(("hf-hub:", "hf_hub:")):
        repo = source.split(":", 1)[1]
        if _hub_file(repo, INTROSPECTION_CONFIG) is not None:
            head = IntrospectiveHead.from_pretrained(repo)
            return head.model, head.label_names
        config, weights = _hub_file(repo, TIMM_CONFIG), _hub_file(repo, TIMM_WEIGHTS)
        if config is None or weights is None:
            missing = TIMM_CONFIG if config is None else TIMM_WEIGHTS
            raise CheckpointError(f"{repo!r} has no {missing}: only timm models saved with safetensors are loaded "
                                  "(timm.models.save_for_hf(..., safe_serialization=True)); no pickle files")
        model = build_backbone(read_timm_config(config), weights)
        return model, (model.pretrained_cfg or {}).get("label_names")
    folder = Path(source)  # a folder (anything else went to resolve_backbone above)
    if (folder / INTROSPECTION_CONFIG).is_file():
        head = IntrospectiveHead.from_pretrained(folder)
        return head.model, head.label_names
    model = load_backbone(folder)
    return model, (model.pretrained_cfg or {}).get("label_names")


def _read(path: Path) -> Image.Image:
    if path.exists() and not path.is_file():  # a FIFO would block open() forever; a folder is no image
        raise DataError(f"image {str(path)!r} is not a regular file (a folder, a FIFO or a device): pass image files")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (FileNotFoundError, IsADirectoryError) as err:
        raise DataError(f"image {str(path)!r} does not exist") from err
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read image {str(path)!r} ({err}); pass PNG or JPEG files") from err


def _contrast(values: Sequence[str] | None) -> Contrast:
    if not values:
        return None
    if list(values) == ["all"]:
        return "all"
    if "all" in values:
        raise InvalidArgumentError("--contrast all cannot be combined with class names")
    return [int(v) if v.isdigit() else v for v in values]


def explain_images(model: str | Path, images: Sequence[str | Path], out_dir: str | Path,
                   contrast: Sequence[str] | None = None, target_layer: str | None = None, method: str = "auto",
                   columns: int = 6, batch_size: int = 16, checkpoint: str | Path | None = None) -> list[Path]:
    """Explain image files with f from ``model`` and write ``<out_dir>/<image name>.png`` for each, plus
    ``explanations.json`` (predictions, probabilities, contrast classes, how the maps were made).

    Args:
        contrast: class names or indices, ``["all"]``, or ``None`` (each image's runner-up class).
        checkpoint: f's weights (``.safetensors``) when ``model`` is a timm architecture name.
    """
    from ...data.outputs import prepare_output, write_json

    figure_pyplot()  # without matplotlib, stop before anything else
    if not images:
        raise InvalidArgumentError("no images given: pass at least one image file")
    paths = [Path(p) for p in images]
    for path in paths:  # every image is a regular file before f is loaded (a FIFO would hang the run)
        if not path.is_file():
            raise DataError(f"image {str(path)!r} " + ("is not a regular file (a folder, a FIFO or a device): pass "
                                                       "image files" if path.exists() else "does not exist"))
    out_dir = prepare_output(out_dir, "explain")
    network, names = load_classifier(model, checkpoint)
    explainer = Explainer(network, target_layer, method, names)
    transform = make_transform(network, train=False)
    cfg = resolve_model_data_config(network)
    spec = _contrast(contrast)
    stems = [p.stem for p in paths]
    written, records = [], []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        x = torch.stack([transform(_read(p)) for p in chunk])
        result = explainer(x, spec)
        for i, path in enumerate(chunk):
            stem = stems[start + i] if stems.count(stems[start + i]) == 1 else f"{stems[start + i]}-{start + i}"
            target = out_dir / f"{stem}.png"
            explanation_figure(result, i, denormalize(x[i], cfg["mean"], cfg["std"]), target,
                               title=f"{path.name}: {result.plan.method} at {result.plan.layer} "
                                     f"({'x'.join(map(str, result.plan.layout.grid))} map)", columns=columns)
            written.append(target)
            probs = result.probabilities[i]
            records.append({"image": str(path), "figure": target.name,
                            "prediction": result.class_name(result.prediction[i]),
                            "probability": round(float(probs[result.prediction[i]]), 4),
                            "contrast": [result.class_name(q) for q in result.contrast[i].tolist()]})
    plan = explainer.plan(x)
    summary = {"model": str(model), "method": plan.method, "layer": plan.layer, "reason": plan.reason,
               "grid": list(plan.layout.grid), "images": records}
    write_json(out_dir / "explanations.json", summary)
    return written
