"""Saving and loading an IntrospectiveHead: local folders and the Hugging Face Hub.

A saved model is a folder (or Hub repo) that timm can still read:

* ``config.json`` + ``model.safetensors``: the backbone f exactly as ``timm.models.save_for_hf`` writes
  it, so ``timm.create_model("hf-hub:<repo>", pretrained=True)`` loads f alone;
* ``introspection_config.json``: loss, target, H's structure, class names, versions;
* ``introspection.safetensors``: target M, the [-1, 1] scale and H's weights;
* ``README.md``: the model card (``hub_cards/``).

Loading is strict: only safetensors are read (never pickle), every tensor's name and shape is checked
before anything is copied, and any problem raises :class:`CheckpointError` saying what to do.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import timm
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
from torch import nn

from .errors import CheckpointError
from .models import use_cifar_stem

__all__ = ["FORMAT_VERSION", "IntrospectionConfig", "download_files", "build_backbone", "load_strict", "load_tensors", "save_backbone",
           "read_timm_config"]

#: Version of the introspection files' layout; loading refuses any other.
FORMAT_VERSION = 1

TIMM_CONFIG = "config.json"
TIMM_WEIGHTS = "model.safetensors"
INTROSPECTION_CONFIG = "introspection_config.json"
INTROSPECTION_WEIGHTS = "introspection.safetensors"
FILES = (TIMM_CONFIG, TIMM_WEIGHTS, INTROSPECTION_CONFIG, INTROSPECTION_WEIGHTS)


@dataclass
class IntrospectionConfig:
    """What ``introspection_config.json`` holds: everything needed to rebuild the head around f."""

    loss: str
    target: float | str
    num_classes: int
    num_features: int
    classifiers: list[dict[str, Any]]
    scale: bool = True
    introspective_net: dict[str, Any] = field(default_factory=dict)
    label_names: list[str] | None = None
    cifar_stem: bool = False
    dataset: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    timm_introspect_version: str = ""
    timm_version: str = ""

    @classmethod
    def from_file(cls, path: str | Path) -> "IntrospectionConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"cannot read {INTROSPECTION_CONFIG} ({err}); save the model again") from err
        if not isinstance(data, dict):
            raise CheckpointError(f"{INTROSPECTION_CONFIG} holds {type(data).__name__}, not an object; save the model again")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{INTROSPECTION_CONFIG} has format_version {version!r} (written by timm-introspect "
                f"{data.get('timm_introspect_version', '?')}); this timm-introspect reads format {FORMAT_VERSION}: "
                "install the timm-introspect version that saved it, or save the model again with this one"
            )
        known = set(cls.__dataclass_fields__)
        missing = {"loss", "target", "num_classes", "num_features", "classifiers"} - set(data)
        if missing:
            raise CheckpointError(f"{INTROSPECTION_CONFIG} lacks {sorted(missing)}; save the model again")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def download_files(
    model_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> dict[str, Path]:
    """Local paths of the four model files, from a folder or downloaded from the Hub (cached)."""
    folder = Path(model_id)
    paths: dict[str, Path] = {}
    for name in FILES:
        if folder.is_dir():
            path = folder / name
            if not path.is_file():
                raise CheckpointError(_missing_message(str(folder), name))
            paths[name] = path
            continue
        try:
            paths[name] = Path(
                hf_hub_download(
                    model_id, name, revision=revision, cache_dir=cache_dir, force_download=force_download,
                    local_files_only=local_files_only, token=token,
                )
            )
        except LocalEntryNotFoundError as err:  # (a subclass of EntryNotFoundError: first)
            raise CheckpointError(
                f"{name} of {model_id!r} is not in the local cache and the Hub cannot be reached (offline?): "
                "download it once while online, or pass a local folder"
            ) from err
        except EntryNotFoundError as err:
            raise CheckpointError(_missing_message(model_id, name)) from err
        except RepositoryNotFoundError as err:
            raise CheckpointError(
                f"{model_id!r} is neither a local folder nor a Hub repository you can access; check the name "
                "(and your token for a private repo)"
            ) from err
    return paths


def _missing_message(where: str, name: str) -> str:
    if name in (INTROSPECTION_CONFIG, INTROSPECTION_WEIGHTS):
        return (
            f"{where} has no {name}: it is not a timm-introspect model. Load its backbone alone with "
            f"timm.create_model('hf-hub:{where}', pretrained=True) and wrap it with IntrospectiveHead.wrap()"
        )
    return f"{where} has no {name}: the backbone is missing; save the model again with save_pretrained()"


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a truncated or corrupted file raises :class:`CheckpointError`."""
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{Path(path).name} is not a valid safetensors file ({err}); it may be truncated or corrupted: "
            "download it again (force_download=True) or save the model again"
        ) from err


def read_timm_config(path: str | Path) -> dict[str, Any]:
    """timm's ``config.json``, checked for what rebuilding f needs."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {TIMM_CONFIG} ({err}); save the model again") from err
    if not isinstance(cfg.get("architecture"), str) or not isinstance(cfg.get("num_classes"), int):
        raise CheckpointError(f"{TIMM_CONFIG} lacks 'architecture' or 'num_classes': it is not a timm model config")
    if cfg["architecture"] not in timm.list_models():
        raise CheckpointError(
            f"{TIMM_CONFIG} names architecture {cfg['architecture']!r}, which timm {timm.__version__} does not have: "
            "upgrade timm"
        )
    return cfg


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str, skip_prefix: str | None = None) -> None:
    """``module.load_state_dict(state)`` after checking every name and shape: all or nothing.

    Entries of ``module`` under ``skip_prefix`` are neither expected nor loaded.
    """
    expected = {k: v for k, v in module.state_dict().items() if not (skip_prefix and k.startswith(skip_prefix))}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            k = wrong[0]
            details.append(
                f"{len(wrong)} with other shapes, e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
            )
        raise CheckpointError(
            f"{what} does not match the model its config describes ({'; '.join(details)}); nothing was loaded. "
            "The files come from different models or versions: save the model again"
        )
    module.load_state_dict(state, strict=skip_prefix is None)


def save_backbone(model: nn.Module, out_dir: str | Path, label_names: list[str] | None = None) -> None:
    """f in timm's Hub layout (``config.json`` + ``model.safetensors``), with the CIFAR-stem flag."""
    model_config: dict[str, Any] = {}
    if label_names:
        model_config["label_names"] = list(label_names)
    if getattr(model, "cifar_stem", False):
        model_config["cifar_stem"] = True
    timm.models.save_for_hf(model, str(out_dir), model_config=model_config or None, safe_serialization=True)


def build_backbone(timm_cfg: dict[str, Any], weights: str | Path, cifar_stem: bool = False) -> nn.Module:
    """f rebuilt from timm's ``config.json`` contents and its weights, loaded strictly."""
    model_args = {**timm_cfg.get("model_args", {}), "num_classes": timm_cfg["num_classes"]}
    model = timm.create_model(
        timm_cfg["architecture"], pretrained=False, pretrained_cfg_overlay=timm_cfg.get("pretrained_cfg") or None,
        **model_args,
    )
    if cifar_stem:
        use_cifar_stem(model)
    load_strict(model, load_tensors(weights), TIMM_WEIGHTS)
    return model.eval()


def timm_versions() -> tuple[str, str]:
    from . import __version__

    return __version__, timm.__version__
