"""The feature cache: r_x of a dataset, extracted once under ``accelerate`` and kept as safetensors.

An entry is a folder ``<cache_dir>/<key>/`` with ``features.safetensors`` and ``meta.json``. The key
hashes f's weights, the loss and target, the data (rows and preprocessing), the form and the format,
so a stale entry is never used. Entries are written aside and renamed into place: one is complete or
absent. r_x is stored flat (``features``: ``(n, N*d)``) or, for an H that reads factors, as
``delta.<i>`` ``(n, S, N)`` and ``h.<i>`` ``(n, S, d)`` per classifier layer ``i``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors.torch
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .data import LabeledImages, make_loader, make_transform
from .errors import CheckpointError
from .hub import load_tensors
from .stats import MaxLogitMean

if TYPE_CHECKING:
    from .head import IntrospectiveHead

__all__ = ["CACHE_FORMAT", "Features", "extract_features", "fingerprint"]

CACHE_FORMAT = 1

#: r_x as the cache returns it: flat ``(n, F)``, or ``{classifier: (delta (n, S, N), h (n, S, d))}``
Features = torch.Tensor | dict[str, tuple[torch.Tensor, torch.Tensor]]


def fingerprint(head: IntrospectiveHead, images: LabeledImages, factored: bool = False) -> str:
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
def _extract(accelerator: Accelerator, head: IntrospectiveHead, images: LabeledImages, batch_size: int, workers: int,
             factored: bool) -> tuple[dict[str, torch.Tensor], float | None]:
    """Every process computes its batches; all of them get every image's features (gathered)."""
    loader = accelerator.prepare(make_loader(images, head.model, False, batch_size, workers))
    head.to(accelerator.device)
    show = accelerator.is_local_main_process
    m_value = None
    if head.target == "M":  # the statistic IntrospectiveHead.fit uses, on the gathered logits
        m = MaxLogitMean()
        for x, _ in tqdm(loader, desc="introspect: target M", disable=not show):
            m.update(accelerator.gather_for_metrics(head.model(x)))
        m_value = m.compute()
        head.target_value.fill_(m_value)
    names = [c.name for c in head.classifiers]
    parts: dict[str, list[torch.Tensor]] = {}
    for x, y in tqdm(loader, desc="introspect: features", disable=not show):
        if factored:
            _, factors = head.introspective_factors(x)
            batch = {f"{kind}.{i}": t for i, n in enumerate(names)
                     for kind, t in zip(("delta", "h"), factors[n], strict=True)}
        else:
            batch = {"features": head.flat_features(x)[1]}
        batch["labels"] = y
        for k, t in accelerator.gather_for_metrics(batch).items():
            parts.setdefault(k, []).append(t.cpu() if k == "labels" else t.float().cpu())
    return {k: torch.cat(v).contiguous() for k, v in parts.items()}, m_value


def _read_entry(folder: Path, head: IntrospectiveHead, images: LabeledImages,
                factored: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """A cache entry, checked against what it must hold; any mismatch raises."""
    meta = json.loads((folder / "meta.json").read_text())
    tensors = load_tensors(folder / "features.safetensors")
    n = len(images)
    if not isinstance(meta, dict) or meta.get("count") != n or meta.get("factored") is not factored:
        raise ValueError(f"meta.json does not describe {n} images in this form")
    if head.target == "M" and not math.isfinite(float(meta["target_value"])):
        raise ValueError("meta.json has no finite target M")
    labels = tensors["labels"]
    if tuple(labels.shape) != (n,) or not torch.equal(labels, images.labels()):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the dataset's {n}")
    if factored:
        for i, c in enumerate(head.classifiers):
            num, dim = c.weight.shape[:2]
            delta, h = tensors[f"delta.{i}"], tensors[f"h.{i}"]
            if delta.shape[0] != n or delta.shape[-1] != num or h.shape[0] != n or h.shape[-1] != dim:
                raise ValueError(f"factors of shapes {tuple(delta.shape)}, {tuple(h.shape)} for {n} x ({num}, {dim})")
    elif tuple(tensors["features"].shape) != (n, head.num_features):
        raise ValueError(f"features of shape {tuple(tensors['features'].shape)}, expected {(n, head.num_features)}")
    return tensors, meta


def extract_features(
    accelerator: Accelerator,
    head: IntrospectiveHead,
    images: LabeledImages,
    cache_dir: str | Path,
    batch_size: int = 256,
    workers: int = 0,
    factored: bool = False,
) -> tuple[Features, torch.Tensor, Path]:
    """r_x of a dataset and its labels ``(n,)``, from the cache or extracted once: ``(features, labels, folder)``.

    r_x comes raw and flat, ``(n, F)``, or with ``factored=True`` as ``{classifier: (delta, h)}`` (N + d
    numbers per image and position instead of N d; see :meth:`IntrospectiveHead.introspective_factors`).
    For a "-M" loss, M (the mean max-logit over these images) is estimated first, set on ``head`` and
    stored with the entry.
    """
    key = fingerprint(head, images, factored)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    folder = Path(cache_dir) / key
    meta_path = folder / "meta.json"
    names = [c.name for c in head.classifiers]
    tensors = None
    if meta_path.is_file():
        try:
            tensors, meta = _read_entry(folder, head, images, factored)
        except (CheckpointError, ValueError, KeyError, TypeError, OSError) as err:
            # a damaged entry is rebuilt, not trusted (the rename below puts a complete one in its place)
            accelerator.print(f"introspect: the cached features in {folder} are damaged ({err}); extracting them again")
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                shutil.rmtree(folder, ignore_errors=True)
            accelerator.wait_for_everyone()
        else:
            if head.target == "M":
                head.target_value.fill_(meta["target_value"])
            accelerator.print(f"introspect: reusing cached features {folder}")
    if tensors is None:
        tensors, m_value = _extract(accelerator, head, images, batch_size, workers, factored)
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
    if factored:
        features: Features = {n: (tensors[f"delta.{i}"], tensors[f"h.{i}"]) for i, n in enumerate(names)}
    else:
        features = tensors["features"]
    return features, tensors["labels"], folder
