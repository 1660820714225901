"""f from what a user has: a saved folder, a timm model on the Hub, or an architecture name and a checkpoint.

:func:`resolve_backbone` is what every job that takes f (``fit``, ``evaluate``, ...) calls with its
``--backbone`` / ``--checkpoint`` arguments:

* a folder in timm's layout (``config.json`` + ``model.safetensors``, e.g. written by ``train-backbone`` or
  ``timm.models.save_for_hf``);
* ``hf-hub:<repo>``: a timm model on the Hub (``hf-hub:timm/resnet50.a1_in1k``). Only its ``config.json`` and
  ``model.safetensors`` are downloaded: a repo with pickle weights alone (``pytorch_model.bin``) is refused;
* a timm architecture name with ``checkpoint=<file>.safetensors``: the model is built with the checkpoint's
  number of classes and the weights are loaded strictly.

Loading is always strict (:func:`~timm_introspect.io.checkpoint.load_strict`): every name and shape must match,
and any problem raises :class:`~timm_introspect.CheckpointError` before anything is trained.
"""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from ..errors import CheckpointError
from .checkpoint import (
    TIMM_CONFIG,
    TIMM_WEIGHTS,
    hub_download,
    load_strict,
    load_tensors,
    missing_folder,
    read_timm_config,
)
from .hub import build_backbone

__all__ = ["HF_HUB_PREFIX", "load_folder", "resolve_backbone"]

HF_HUB_PREFIX = "hf-hub:"


def resolve_backbone(spec: str | Path, checkpoint: str | Path | None = None) -> nn.Module:
    """f, in eval mode, from a folder, an ``hf-hub:<repo>`` id, or a timm architecture name + ``checkpoint``.

    Args:
        spec: a folder in timm's layout, ``"hf-hub:<owner>/<name>"`` (optionally ``@<revision>``), or a timm
            architecture name (``"resnet50"``), which needs ``checkpoint``.
        checkpoint: a ``.safetensors`` state dict of that architecture (only with an architecture name).

    Raises:
        CheckpointError: the spec is none of these, the weights are not safetensors, or they do not match.
    """
    text = str(spec)
    if text.startswith(HF_HUB_PREFIX):
        _no_checkpoint(checkpoint, text)
        return _from_hub(text[len(HF_HUB_PREFIX):])
    if Path(text).is_dir():
        _no_checkpoint(checkpoint, text)
        return load_folder(text)
    if checkpoint is None:
        if timm.is_model(text):
            raise CheckpointError(
                f"{text!r} is a timm architecture but no weights were given: pass checkpoint=<file>.safetensors, "
                f"or a timm model on the Hub as hf-hub:<repo> (e.g. hf-hub:timm/{text}.<tag>)")
        what = (f"{missing_folder(text)}, and it is neither" if text.startswith((".", "~")) or "/" in text
                or "\\" in text else f"{text!r} is neither a folder,")  # written as a path: a missing folder
        raise CheckpointError(
            f"{what} an hf-hub:<repo> id nor a timm architecture: pass a folder written by `timm-introspect "
            "train-backbone` (or timm's save_for_hf), hf-hub:<owner>/<name>, or an architecture name with "
            "checkpoint=<file>.safetensors")
    return _from_checkpoint(text, Path(checkpoint))


def _no_checkpoint(checkpoint: str | Path | None, spec: str) -> None:
    if checkpoint is not None:
        raise CheckpointError(f"{spec} brings its own weights: checkpoint= goes only with an architecture name")


def load_folder(folder: str | Path) -> nn.Module:
    """f from a folder in timm's layout (``config.json`` + ``model.safetensors``), loaded strictly."""
    folder = Path(folder)
    for name in (TIMM_CONFIG, TIMM_WEIGHTS):
        if not (folder / name).is_file():
            extra = " (pickle weights such as pytorch_model.bin are never read)" if name == TIMM_WEIGHTS else ""
            raise CheckpointError(f"{folder} has no {name}{extra}: pass a folder written by `timm-introspect "
                                  "train-backbone` or timm.models.save_for_hf(safe_serialization=True)")
    return build_backbone(read_timm_config(folder / TIMM_CONFIG), folder / TIMM_WEIGHTS)


def _from_hub(repo: str) -> nn.Module:
    repo_id, _, revision = repo.partition("@")
    paths = {}
    for name in (TIMM_CONFIG, TIMM_WEIGHTS):
        paths[name] = hub_download(repo_id, name, revision=revision or None, folder_meant=False)
        if paths[name] is None and name == TIMM_CONFIG:
            raise CheckpointError(f"hf-hub:{repo} has no {TIMM_CONFIG}: it is not a timm model")
        if paths[name] is None:
            raise CheckpointError(
                f"hf-hub:{repo} has no {TIMM_WEIGHTS}: only safetensors weights are read, never pickle files such as "
                "pytorch_model.bin. Convert the weights (load them where you trust the file and save them with "
                "timm.models.save_for_hf(model, folder, safe_serialization=True)) and pass that folder")
    return build_backbone(read_timm_config(paths[TIMM_CONFIG]), paths[TIMM_WEIGHTS])


def _from_checkpoint(architecture: str, checkpoint: Path) -> nn.Module:
    if not timm.is_model(architecture):
        raise CheckpointError(f"{architecture!r} is not a timm architecture (timm {timm.__version__}): check the "
                              "name with timm.list_models(), or pass a folder or hf-hub:<repo>")
    if checkpoint.suffix != ".safetensors":
        raise CheckpointError(f"{checkpoint.name} is not a .safetensors file: only safetensors are read, never "
                              "pickle (.bin, .pth, .pt). Convert it where you trust the file: "
                              "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')")
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    state = load_tensors(checkpoint)
    cfg = timm.models.get_pretrained_cfg(architecture)
    # one classifier name, or several (a distilled model's ("head", "head_dist")): all of the same class count
    classifiers = getattr(cfg, "classifier", None) or "head"
    classifiers = [classifiers] if isinstance(classifiers, str) else list(classifiers)
    weights = [state.get(f"{name}.weight") for name in classifiers]
    if any(w is None or w.ndim < 2 for w in weights):
        names = " and ".join(f"{name}.weight" for name in classifiers)
        raise CheckpointError(f"{checkpoint.name} has no classifier weight {names} of {architecture}: "
                              "it is not a checkpoint of this architecture (with a classifier); nothing was loaded")
    counts = {int(w.shape[0]) for w in weights}
    if len(counts) != 1:
        raise CheckpointError(f"{checkpoint.name}: the classifiers {classifiers} of {architecture} have different "
                              f"class counts {sorted(counts)}; nothing was loaded")
    model = timm.create_model(architecture, pretrained=False, num_classes=counts.pop())
    load_strict(model, state, checkpoint.name)
    return model.eval()
