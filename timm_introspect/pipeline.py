"""The main jobs: train f, fit H on cached introspective features, evaluate f against H.

Each job is a function (used by the CLI, ``timm_introspect.cli``) that runs under ``accelerate``:
the same call works on one CPU and under ``accelerate launch`` / ``torchrun`` with many processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import safetensors.torch
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from . import hub
from .data import LabeledImages, make_transform
from .hub import save_backbone
from .errors import CheckpointError
from .classifier import find_classifiers
from .head import IntrospectiveHead
from .lowrank import FactorizedMLP, RankOneMLP
from .metrics import classification_metrics
from .models import create_model
from .training import Schedule, make_accelerator, train_loop

__all__ = ["HEAD_NETS", "evaluate", "extract_features", "fit_head", "load_backbone", "save_backbone", "train_backbone"]

CACHE_FORMAT = 1

#: The H that :func:`fit_head` trains: the paper's MLP on materialized r_x (``"mlp"``), or one that reads
#: r_x = delta h^T in factored form and never materializes it (:mod:`timm_introspect.lowrank`):
#: ``"factorized"`` (first layer O(k (N + d))) or ``"rankone"`` (the MLP's function class, O(k N d)).
HEAD_NETS = ("mlp", "factorized", "rankone")


def _make_net(kind: str, backbone: nn.Module) -> nn.Module | None:
    """H of kind ``kind`` for f (``None``: the head's default, the paper's MLP)."""
    if kind not in HEAD_NETS:
        raise ValueError(f"unknown H {kind!r}; choose from {', '.join(HEAD_NETS)}")
    if kind == "mlp":
        return None
    shapes = [tuple(c.weight.shape[:2]) for c in find_classifiers(backbone)]
    num_classes = int(getattr(backbone, "num_classes", 0) or shapes[0][0])
    return (FactorizedMLP if kind == "factorized" else RankOneMLP)(shapes, num_classes)


def _loader(images: LabeledImages, model: nn.Module, train: bool, batch_size: int, workers: int = 0) -> DataLoader:
    channels = model.pretrained_cfg.get("input_size", (3,))[0]
    ds = images.torch_dataset(make_transform(model, train=train), channels=channels)
    # no persistent workers: their random streams would carry over epochs, which a resumed run cannot replay
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=workers, drop_last=False,
                      collate_fn=_collate)


def _collate(rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([r["pixel_values"] for r in rows]), torch.as_tensor([r["label"] for r in rows])


# --- f -------------------------------------------------------------------------------------------

def load_backbone(folder: str | Path) -> nn.Module:
    """f from a folder written by :func:`save_backbone` (strict, safetensors only)."""
    folder = Path(folder)
    for name in (hub.TIMM_CONFIG, hub.TIMM_WEIGHTS):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} has no {name}: pass a folder written by `timm-introspect train-backbone`")
    cfg = hub.read_timm_config(folder / hub.TIMM_CONFIG)
    return hub.build_backbone(cfg, folder / hub.TIMM_WEIGHTS, cifar_stem=bool(cfg.get("cifar_stem")))


def train_backbone(
    train: LabeledImages,
    out_dir: str | Path,
    model_name: str = "resnet18",
    cifar_stem: bool = True,
    schedule: Schedule | None = None,
    batch_size: int = 128,
    seed: int = 0,
    mixed_precision: str = "no",
    workers: int = 0,
    test: LabeledImages | None = None,
    on_step: Callable[[int, int], None] | None = None,
    holdout: float = 0.0,
    limit: int | None = None,
) -> nn.Module:
    """Train a timm classifier from scratch (f) and save it to ``out_dir`` (timm layout).

    With ``holdout`` > 0, f trains without that (seeded) fraction of ``train``, which is recorded in
    ``training.json`` so that :func:`fit_head` can fit H on the held-out images (paper, Fig. 10).
    ``limit`` is only recorded (the subset ``train`` was loaded with), to rebuild that split later.
    """
    out_dir = Path(out_dir)
    source_split = train.split
    if holdout:
        train, _ = train.split_holdout(holdout, seed)
    accelerator = make_accelerator(out_dir, seed, mixed_precision)
    schedule = schedule or Schedule(epochs=200)
    model = create_model(model_name, train.num_classes, cifar_stem=cifar_stem)
    loader = _loader(train, model, True, batch_size, workers)

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    info = {"model": model_name, "cifar_stem": cifar_stem, "data": train.source, "split": source_split,
            "images": len(train), "limit": limit, "seed": seed, "holdout": holdout, "batch_size": batch_size}
    model = train_loop(accelerator, model, loader, loss_fn, schedule, out_dir / "checkpoints", "f", on_step,
                       signature={k: v for k, v in info.items() if k != "images"})
    model.eval()
    info["schedule"] = schedule.__dict__
    if test is not None:  # every rank predicts (gather_for_metrics needs them all); the main one writes
        logits, labels = _predict(accelerator, model, _loader(test, model, False, batch_size, workers))
        info["test"] = classification_metrics(logits, labels)
    if accelerator.is_main_process:
        save_backbone(model, out_dir, train.label_names)
        (out_dir / "training.json").write_text(json.dumps(info, indent=2))
    accelerator.wait_for_everyone()
    return model


@torch.no_grad()
def _predict(accelerator: Accelerator, model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    model = model.to(accelerator.device).eval()
    loader = accelerator.prepare(loader)
    outs, labels = [], []
    for x, y in tqdm(loader, desc="predict", leave=False, disable=not accelerator.is_local_main_process):
        out, y = accelerator.gather_for_metrics((model(x), y))
        outs.append(out.float().cpu())
        labels.append(y.cpu())
    return torch.cat(outs), torch.cat(labels)


# --- r_x, cached --------------------------------------------------------------------------------

def _fingerprint(head: IntrospectiveHead, images: LabeledImages, factored: bool = False) -> str:
    """Cache key: f's weights, the loss and target, the data (rows and transform), the form, the format."""
    h = hashlib.sha256()
    for name, tensor in sorted(head.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([head.loss, str(head.target), CACHE_FORMAT, factored, images.source, images.split,
                         images.image_column, images.label_column, images.dataset._fingerprint,
                         repr(make_transform(head.model, train=False))]).encode())
    return h.hexdigest()[:24]


@torch.no_grad()
def extract_features(
    accelerator: Accelerator,
    head: IntrospectiveHead,
    images: LabeledImages,
    cache_dir: str | Path,
    batch_size: int = 256,
    workers: int = 0,
    factored: bool = False,
) -> tuple[torch.Tensor | dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor, Path]:
    """r_x of a dataset and its labels ``(n,)``, from the cache or extracted once.

    r_x comes raw and flat, ``(n, F)``, or with ``factored=True`` as ``{classifier: (delta (n, S, N),
    h (n, S, d))}`` (N + d numbers per image and position instead of N d; see
    :meth:`IntrospectiveHead.introspective_factors`). For a "-M" loss, M (the mean max-logit over these
    images) is estimated first and stored with the cache. The cache folder is keyed by f's weights, loss,
    target, form and data, so a stale one is never used; it is complete only once its ``meta.json`` is
    written.
    """
    key = _fingerprint(head, images, factored)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    folder = Path(cache_dir) / key
    meta_path = folder / "meta.json"
    names = [c.name for c in head.classifiers]
    if not meta_path.is_file():
        loader = accelerator.prepare(_loader(images, head.model, False, batch_size, workers))
        head.to(accelerator.device)
        show = accelerator.is_local_main_process
        m_value = None
        if head.target == "M":
            total, count = torch.zeros((), dtype=torch.float64), 0
            for x, _ in tqdm(loader, desc="introspect: target M", disable=not show):
                top = accelerator.gather_for_metrics(head.model(x).float().amax(-1))
                total += top.double().sum().cpu()
                count += top.numel()
            m_value = (total / count).item()
            head.target_value.fill_(m_value)
        parts: dict[str, list[torch.Tensor]] = {}
        labels = []
        for x, y in tqdm(loader, desc="introspect: features", disable=not show):
            if factored:
                _, factors = head.introspective_factors(x)
                batch = {f"{kind}.{i}": t for i, n in enumerate(names) for kind, t in zip(("delta", "h"), factors[n])}
            else:
                batch = {"features": head.flat_features(x)[1]}
            batch, y = accelerator.gather_for_metrics((batch, y))
            for k, t in batch.items():
                parts.setdefault(k, []).append(t.float().cpu())
            labels.append(y.cpu())
        tensors = {k: torch.cat(v).contiguous() for k, v in parts.items()}
        tensors["labels"] = torch.cat(labels).contiguous()
        if accelerator.is_main_process:  # written aside, then renamed: a cache folder is complete or absent
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=Path(cache_dir)))
            safetensors.torch.save_file(tensors, str(tmp / "features.safetensors"))
            (tmp / "meta.json").write_text(json.dumps({
                "key": key, "count": len(tensors["labels"]), "factored": factored, "classifiers": names,
                "num_features": head.num_features, "loss": head.loss, "target": head.target, "target_value": m_value,
                "source": images.source, "split": images.split}, indent=2))
            try:
                os.replace(tmp, folder)
            except OSError:  # another run wrote the same entry meanwhile: theirs is as good
                shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
    else:
        meta = json.loads(meta_path.read_text())
        tensors = hub.load_tensors(folder / "features.safetensors")
        if head.target == "M":
            head.target_value.fill_(meta["target_value"])
        accelerator.print(f"introspect: reusing cached features {folder}")
    if factored:
        features = {n: (tensors[f"delta.{i}"], tensors[f"h.{i}"]) for i, n in enumerate(names)}
    else:
        features = tensors["features"]
    return features, tensors["labels"], folder


# --- H --------------------------------------------------------------------------------------------

def fit_head(
    backbone: nn.Module,
    train: LabeledImages,
    out_dir: str | Path,
    loss: str = "mse-M",
    schedule: Schedule | None = None,
    batch_size: int = 128,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    mixed_precision: str = "no",
    workers: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    net: str = "mlp",
) -> IntrospectiveHead:
    """Fit H on f's introspective features of ``train`` and save the whole model to ``out_dir``.

    f is frozen. r_x is extracted once (cached in ``cache_dir``, default ``<out_dir>/feature-cache``),
    M and the [-1, 1] scale are estimated on it, and H is trained with :func:`train_loop` (resumable).
    ``net`` is one of :data:`HEAD_NETS`: the paper's MLP, or an H on the factors (delta, h) of r_x, which
    are then what is cached and scaled (r_x is never materialized).
    """
    out_dir = Path(out_dir)
    accelerator = make_accelerator(out_dir, seed, mixed_precision)
    schedule = schedule or Schedule(epochs=200, weight_decay=5e-3)
    head = IntrospectiveHead.wrap(backbone, loss=loss, label_names=train.label_names,
                                  introspective_net=_make_net(net, backbone))
    train.check_labels(head.num_classes)
    features, labels, cache_folder = extract_features(accelerator, head, train, cache_dir or out_dir / "feature-cache",
                                                      batch_size=batch_size, workers=workers, factored=head.takes_factors)
    head.scaler.reset()
    head.scaler.update(features)
    scaled = head.scaler.to("cpu")(features)
    names = list(scaled) if head.takes_factors else []
    columns = [t for n in names for t in scaled[n]] if head.takes_factors else [scaled]
    loader = DataLoader(TensorDataset(*columns, labels), batch_size=batch_size, shuffle=True)

    def loss_fn(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        *x, y = batch
        inputs = {n: (x[2 * i], x[2 * i + 1]) for i, n in enumerate(names)} if names else x[0]
        return F.cross_entropy(model(inputs), y)

    signature = {"features": cache_folder.name, "loss": head.loss, "batch_size": batch_size, "seed": seed,
                 "introspective_net": head.introspection_config().introspective_net}
    trained = train_loop(accelerator, head.introspective_net, loader, loss_fn, schedule, out_dir / "checkpoints",
                         "H", on_step, signature=signature)
    head.introspective_net = trained.to("cpu")
    head.to("cpu").eval()
    head.dataset = train.source
    if accelerator.is_main_process:
        head.save_pretrained(out_dir)
    accelerator.wait_for_everyone()
    return head


@torch.no_grad()
def evaluate(
    head: IntrospectiveHead,
    images: LabeledImages,
    batch_size: int = 256,
    accelerator: Accelerator | None = None,
    workers: int = 0,
) -> dict[str, dict[str, float]]:
    """Accuracy, ECE, MCE, NLL and Brier of f and of H on a dataset: ``{"f": {...}, "H": {...}}``.

    With several processes, every image is counted once (``gather_for_metrics``).
    """
    accelerator = accelerator or Accelerator()
    images.check_labels(head.num_classes)
    head = head.to(accelerator.device).eval()
    loader = accelerator.prepare(_loader(images, head.model, False, batch_size, workers))
    f_logits, h_logits, labels = [], [], []
    for x, y in tqdm(loader, desc="evaluate", leave=False, disable=not accelerator.is_local_main_process):
        out = head(x)
        f, h, y = accelerator.gather_for_metrics((out.base_logits, out.logits, y))
        f_logits.append(f.float().cpu())
        h_logits.append(h.float().cpu())
        labels.append(y.cpu())
    labels_t = torch.cat(labels)
    return {"f": classification_metrics(torch.cat(f_logits), labels_t),
            "H": classification_metrics(torch.cat(h_logits), labels_t)}
