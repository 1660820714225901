"""Saving and loading an IntrospectiveHead: local folders and the Hugging Face Hub.

A saved model is a folder (or Hub repo) that timm can still read:

* ``config.json`` + ``model.safetensors``: the backbone f exactly as ``timm.models.save_for_hf`` writes
  it, so ``timm.create_model("hf-hub:<repo>", pretrained=True)`` loads f alone;
* ``introspection_config.json``: loss, target, H's structure, class names, versions, and what H trained on
  (``h_training``: the images, the rows, the AugMix copies);
* ``introspection.safetensors``: target M, the [-1, 1] scale and H's weights;
* ``README.md``: the model card (``hub_cards/``), with ``accuracy_vs_ece.png`` and ``reliability.png`` when the
  model records evaluation results (:mod:`timm_introspect.io.figures`, needs matplotlib).

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
from torch import nn

from ..errors import CheckpointError, UnknownNetError
from ..nets.cifar import cifar_architecture, use_cifar_stem
from ..nets.registry import create_net, get_net_class, net_config
from ..version import __version__
from .checkpoint import (
    TIMM_CONFIG,
    TIMM_WEIGHTS,
    check_finite,
    hub_download,
    load_strict,
    load_tensors,
    read_json,
    read_timm_config,
    staged_folder,
)
from .figures import card_figures
from .records import valid_h_training

__all__ = ["FORMAT_VERSION", "IntrospectionConfig", "build_backbone", "download_files", "load_head", "load_strict",
           "introspection_config", "load_tensors", "read_timm_config", "save_backbone", "save_head",
           "check_savable"]

#: Version of the introspection files' layout; loading refuses any other.
FORMAT_VERSION = 1

INTROSPECTION_CONFIG = "introspection_config.json"
INTROSPECTION_WEIGHTS = "introspection.safetensors"
FILES = (TIMM_CONFIG, TIMM_WEIGHTS, INTROSPECTION_CONFIG, INTROSPECTION_WEIGHTS)

#: an :class:`~timm_introspect.IntrospectiveHead` (model/head.py); typed as a module here, since io sits below
#: the model layer and never imports it
HeadLike = nn.Module


@dataclass
class IntrospectionConfig:
    """What ``introspection_config.json`` holds: everything needed to rebuild the head around f."""

    loss: str
    target: float | str
    num_classes: int
    num_features: int
    classifiers: list[dict[str, Any]]
    #: the feature scaling: "maxabs" | "standard" | "none" (older files: true = "maxabs", false = "none")
    scale: bool | str = True
    introspective_net: dict[str, Any] = field(default_factory=dict)
    label_names: list[str] | None = None
    dataset: str | None = None
    #: the held-out clean images for temperature scaling: {"data", "split", "limit", "seed", "holdout"}
    calibration: dict[str, Any] | None = None
    #: f's temperature and the OOD threshold fitted on those images (training.calibrate.Calibration); optional
    fitted_calibration: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    #: the reliability diagrams of those results, {split: {model: {"confidence", "accuracy", "count"}}}; optional
    reliability: dict[str, Any] = field(default_factory=dict)
    #: what H trained on (training.augmented.training_record): {"images": n or null (a caller's loader), "rows": the
    #: rows of r_x, "augmix": {"copies": 0} or {"copies", "operations", "magnitude", "width", "seed", "seeded_by"}};
    #: null when not recorded (a model saved before the field, or an H trained outside train_head): unknown
    h_training: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    timm_introspect_version: str = ""
    timm_version: str = ""

    @classmethod
    def from_file(cls, path: str | Path) -> IntrospectionConfig:
        data = read_json(path, INTROSPECTION_CONFIG)
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
        _check_fields(data)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def _check_fields(data: dict[str, Any]) -> None:
    """The types of ``introspection_config.json``'s fields: a wrong one is refused, not used (a string of
    label names would index letter by letter, a list of metrics would break the card)."""
    def bad(key: str, expected: str) -> CheckpointError:
        return CheckpointError(f"{INTROSPECTION_CONFIG} has {key} {data[key]!r} ({type(data[key]).__name__}): it must "
                               f"be {expected}; save the model again")

    for key in ("num_classes", "num_features"):
        if type(data[key]) is not int or data[key] < 1:
            raise bad(key, "a positive integer")
    if not isinstance(data["loss"], str):
        raise bad("loss", "a loss name")
    if not isinstance(data["classifiers"], list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("shape"), list)
            for c in data["classifiers"]):
        raise bad("classifiers", "a list of objects with a name and a shape")
    names = data.get("label_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
                              or len(names) != data["num_classes"]):
        raise bad("label_names", f"null or a list of {data['num_classes']} strings")
    for key in ("metrics", "introspective_net", "reliability"):
        if key in data and not isinstance(data[key], dict):
            raise bad(key, "an object")
    if isinstance(data.get("metrics"), dict) and not all(isinstance(v, dict) for v in data["metrics"].values()):
        raise CheckpointError(f"{INTROSPECTION_CONFIG} has metrics that are not objects ({{split: {{model: {{metric: "
                              "value}}}}}); save the model again")
    for key in ("calibration", "fitted_calibration"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise bad(key, "null or an object")
    if data.get("h_training") is not None and not valid_h_training(data["h_training"]):
        raise bad("h_training", 'null or an object {"images": null or a count, "rows": a count, "augmix": {"copies": '
                                '0 or more, ...}} (a count of images with AugMix copies)')


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
        path = hub_download(model_id, name, revision=revision, cache_dir=cache_dir, force_download=force_download,
                            local_files_only=local_files_only, token=token)
        if path is None:
            raise CheckpointError(_missing_message(model_id, name))
        paths[name] = path
    return paths


def _missing_message(where: str, name: str) -> str:
    if name in (INTROSPECTION_CONFIG, INTROSPECTION_WEIGHTS):
        return (
            f"{where} has no {name}: it is not a timm-introspect model. Load its backbone alone with "
            f"timm.create_model('hf-hub:{where}', pretrained=True) and wrap it with IntrospectiveHead.wrap()"
        )
    return f"{where} has no {name}: the backbone is missing; save the model again with save_pretrained()"


def _savable_backbone(model: nn.Module) -> nn.Module:
    """f as timm saves it: a ``torch.compile``d model's original module (its state dict without ``_orig_mod.``)."""
    original = getattr(model, "_orig_mod", None)
    return original if isinstance(original, nn.Module) else model


def _write_backbone(model: nn.Module, folder: Path, label_names: list[str] | None) -> None:
    model_config = {"label_names": list(label_names)} if label_names else None
    timm.models.save_for_hf(model, str(folder), model_config=model_config, safe_serialization=True)


def save_backbone(model: nn.Module, out_dir: str | Path, label_names: list[str] | None = None) -> None:
    """f in timm's Hub layout (``config.json`` + ``model.safetensors``), as ``timm.models.save_for_hf`` writes it.

    A CIFAR-stem model is saved under its registered architecture (``resnet18_cifar``, see
    :mod:`timm_introspect.nets.cifar`), so the name alone rebuilds it. The files are written beside ``out_dir``
    and moved in once complete (:func:`~timm_introspect.io.checkpoint.staged_folder`): a failed save leaves
    ``out_dir`` as it was, and its other files (a training run's checkpoints) are kept.
    """
    model = _savable_backbone(model)
    check_finite(model.state_dict(), "f")
    with staged_folder(out_dir, "f") as tmp:
        _write_backbone(model, tmp, label_names)


def build_backbone(timm_cfg: dict[str, Any], weights: str | Path) -> nn.Module:
    """f rebuilt from timm's ``config.json`` contents and its weights, loaded strictly.

    Models saved before the CIFAR architectures were registered carry ``"cifar_stem": true`` and a plain
    timm name; they are rebuilt as the registered ``<name>_cifar`` (or, for other names, by replacing the
    stem with :func:`~timm_introspect.nets.cifar.use_cifar_stem`).
    """
    architecture = timm_cfg["architecture"]
    legacy_stem = timm_cfg.get("cifar_stem", False)
    if not isinstance(legacy_stem, bool):
        raise CheckpointError(
            f"{TIMM_CONFIG} has cifar_stem {legacy_stem!r}: it must be true or false; save the model again")
    patch_stem = False
    if legacy_stem and not architecture.endswith("_cifar"):
        try:
            architecture = cifar_architecture(architecture)
        except ValueError:
            patch_stem = True
    model_args = {**timm_cfg.get("model_args", {}), "num_classes": timm_cfg["num_classes"]}
    pretrained_cfg = dict(timm_cfg.get("pretrained_cfg") or {})
    if isinstance(timm_cfg.get("label_names"), list):  # where timm's own hf-hub loading puts them
        pretrained_cfg.setdefault("label_names", timm_cfg["label_names"])
    if legacy_stem:
        pretrained_cfg["architecture"] = architecture
    model = timm.create_model(architecture, pretrained=False, pretrained_cfg_overlay=pretrained_cfg or None,
                              **model_args)
    if patch_stem:
        use_cifar_stem(model)
    load_strict(model, load_tensors(weights), TIMM_WEIGHTS)
    return model.eval()


def introspection_config(head: HeadLike) -> IntrospectionConfig:
    """What ``introspection_config.json`` holds for ``head``."""
    return IntrospectionConfig(
        loss=head.loss, target=head.target, num_classes=head.num_classes, num_features=head.num_features,
        classifiers=[{"name": c.name, "kind": c.kind, "shape": list(c.weight.shape)} for c in head.classifiers],
        scale=head.scaling, introspective_net=net_config(head.introspective_net), label_names=head.label_names,
        dataset=head.dataset, metrics=head.metrics, calibration=head.calibration, timm_introspect_version=__version__,
        timm_version=timm.__version__, fitted_calibration=getattr(head, "fitted_calibration", None),
        reliability=getattr(head, "reliability", {}), h_training=getattr(head, "h_training", None),
    )


def _introspection_state(head: HeadLike) -> dict[str, torch.Tensor]:
    """What ``introspection.safetensors`` holds: everything of the head but f."""
    return {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items() if not k.startswith("model.")}


def check_savable(head: HeadLike, **card_kwargs: Any) -> Any:
    """Check that everything can be written (finite weights, a model card that renders), before any file of
    a folder is touched; returns the rendered model card."""
    check_classifiers = getattr(head, "check_classifiers", None)
    if callable(check_classifiers):  # a classifier replaced after wrap() would save an H that does not fit f
        check_classifiers()
    check_finite({**_introspection_state(head), **_savable_backbone(head.model).state_dict()}, "the model")
    return head.generate_model_card(**card_kwargs)


def save_head(head: HeadLike, save_directory: str | Path, card_kwargs: dict[str, Any] | None = None) -> None:
    """Write ``head`` to a folder: f in timm's layout, ``introspection_config.json``, ``introspection.safetensors``
    and the model card ``README.md``.

    Everything is checked first (:func:`check_savable`), the files are written into a folder beside
    ``save_directory`` and moved in only once all are written
    (:func:`~timm_introspect.io.checkpoint.staged_folder`): a failed save leaves the folder as it was (an earlier
    model there still loads), and files that are not the model's (a training run's ``checkpoints/``, the feature
    cache, the run's lock) are kept.
    """
    card_kwargs = dict(card_kwargs or {})
    metrics = head.metrics if card_kwargs.get("metrics") is None else card_kwargs["metrics"]  # as the card's
    figures = card_figures(metrics, getattr(head, "reliability", None))
    card = check_savable(head, **{**card_kwargs, "figures": list(figures)})
    state, config = _introspection_state(head), introspection_config(head)
    with staged_folder(save_directory, "the model") as tmp:
        _write_backbone(_savable_backbone(head.model), tmp, head.label_names)
        config.to_file(tmp / INTROSPECTION_CONFIG)
        safetensors.torch.save_file(state, str(tmp / INTROSPECTION_WEIGHTS), metadata={"format": "pt"})
        card.save(tmp / "README.md")
        for name, png in figures.items():  # the card's pictures, moved in with the rest
            (tmp / name).write_bytes(png)


def load_head(
    cls: type[HeadLike],
    model_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    map_location: str | torch.device = "cpu",
    introspective_net: nn.Module | None = None,
) -> HeadLike:
    """Rebuild a head saved by :func:`save_head` from a folder or a Hub repo: all or nothing.

    Every file is read and checked (names, shapes, the classifier layers) before any weight is copied;
    any problem raises :class:`CheckpointError`.
    """
    paths = download_files(model_id, revision, cache_dir, force_download, local_files_only, token)
    cfg = IntrospectionConfig.from_file(paths[INTROSPECTION_CONFIG])
    timm_cfg = read_timm_config(paths[TIMM_CONFIG])
    if timm_cfg["num_classes"] != cfg.num_classes:
        raise CheckpointError(
            f"config.json says {timm_cfg['num_classes']} classes but {INTROSPECTION_CONFIG} says "
            f"{cfg.num_classes}: the files come from different models; save the model again"
        )
    model = build_backbone(timm_cfg, paths[TIMM_WEIGHTS])
    if introspective_net is None:
        net_cfg = dict(cfg.introspective_net)
        name = net_cfg.pop("name", None) or net_cfg.pop("type", None)  # "type": a class name, the older format
        try:
            get_net_class(str(name))
        except UnknownNetError as err:
            raise CheckpointError(
                f"H is a custom {name!r} that is not registered: register its class with "
                "@timm_introspect.register_net(name) before loading, or build it and pass it as "
                "IntrospectiveHead.from_pretrained(..., introspective_net=net); its weights are loaded into it"
            ) from err
    try:
        if introspective_net is None:
            introspective_net = create_net(name, **net_cfg)
        head = cls(model, loss=cfg.loss, target=cfg.target, introspective_net=introspective_net, scale=cfg.scale,
                   label_names=cfg.label_names)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(
            f"{INTROSPECTION_CONFIG} describes a head that cannot be built ({type(err).__name__}: {err}); "
            "save the model again"
        ) from err
    saved_layers = [(c["name"], tuple(c["shape"])) for c in cfg.classifiers]
    rebuilt_layers = [(c.name, tuple(c.weight.shape)) for c in head.classifiers]
    if rebuilt_layers != saved_layers or head.num_features != cfg.num_features:
        raise CheckpointError(
            f"the rebuilt model's classifier layers differ from the saved ones ({saved_layers}); the files come "
            f"from another timm version or model (saved with timm {cfg.timm_version}): install that version"
        )
    load_strict(head, load_tensors(paths[INTROSPECTION_WEIGHTS]), INTROSPECTION_WEIGHTS, skip_prefix="model.")
    head.dataset, head.metrics, head.calibration = cfg.dataset, cfg.metrics, cfg.calibration
    head.fitted_calibration, head.reliability = cfg.fitted_calibration, cfg.reliability
    head.h_training = cfg.h_training  # None: saved without the record (an older model), how H trained is unknown
    return head.to(map_location)


