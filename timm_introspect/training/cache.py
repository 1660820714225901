"""The feature cache: r_x of a dataset, extracted once under ``accelerate`` and kept as safetensors.

An entry is a folder ``<cache_dir>/<key>/`` with ``features.safetensors`` and ``meta.json``. The key
hashes f's weights, the loss and target, the data (rows and preprocessing), the form and the format,
so a stale entry is never used. r_x is stored flat (``features``: ``(n, N*d)``) or, for an H that reads
factors, as ``delta.<i>`` ``(n, S, N)`` and ``h.<i>`` ``(n, S, d)`` per classifier layer ``i``.

Memory stays bounded at any dataset size: extraction streams every batch into a safetensors file laid
out in advance (:class:`StreamingFile`), and an entry is read back memory-mapped, so a cache larger
than RAM (ImageNet's factors: 12 KB an image for resnet50) is paged in from disk as training touches it.
Extraction resumes: the entry is built in ``<cache_dir>/.<key>.partial/``, whose ``progress.json``
counts the images already written, and renamed into place when complete (an entry is complete or absent).

Runs sharing a cache folder (two ``fit`` runs with one ``cache_dir``) never write the same entry at once: its
extraction holds ``<cache_dir>/.<key>.lock`` (an OS file lock, released by the kernel if the run dies); a second
run needing that entry waits for the lock, says so in the log, and then reuses the finished entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..core.stats import fit_target
from ..errors import CheckpointError, DataError
from ..log import tqdm
from .sources import FeatureSource, PairsLoader, as_source
from .streamfile import StreamingFile, open_mapped

if TYPE_CHECKING:
    from ..model.head import IntrospectiveHead

__all__ = ["CACHE_FORMAT", "Features", "extract_features", "fingerprint", "iter_rows", "open_mapped"]

CACHE_FORMAT = 2  # 2: streamed to disk and read memory-mapped

#: r_x as the cache returns it: flat ``(n, F)``, or ``{classifier: (delta (n, S, N), h (n, S, d))}``
Features = torch.Tensor | dict[str, tuple[torch.Tensor, torch.Tensor]]

#: how often (seconds) a running extraction records its progress (flushed to disk first)
_PROGRESS_EVERY_S = 10.0

log = logging.getLogger(__name__)


def fingerprint(head: IntrospectiveHead, source: FeatureSource, factored: bool = False) -> str:
    """Cache key: f's weights, the loss and target, the data (the source's key), the form, the format."""
    h = hashlib.sha256()
    for name, tensor in sorted(head.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([head.loss, str(head.target), CACHE_FORMAT, factored, source.key()]).encode())
    return h.hexdigest()[:24]


def iter_rows(features: Features, chunk: int = 4096):
    """Blocks of ``chunk`` rows of a feature set (flat or factored), each read from disk once."""
    n = len(next(iter(features.values()))[0]) if isinstance(features, dict) else len(features)
    for i in range(0, n, chunk):
        if isinstance(features, dict):
            yield {k: (d[i : i + chunk].clone(), h[i : i + chunk].clone()) for k, (d, h) in features.items()}
        else:
            yield features[i : i + chunk].clone()


def _batch_tensors(head: IntrospectiveHead, x: torch.Tensor, factored: bool) -> dict[str, torch.Tensor]:
    out = head.introspect(x)  # the one introspective pass
    if factored:
        factors = out.factors()
        return {f"{kind}.{i}": t for i, c in enumerate(head.classifiers)
                for kind, t in zip(("delta", "h"), factors[c.name], strict=True)}
    return {"features": out.flat()}


def _prepared(accelerator: Accelerator, batches: Any) -> tuple[Any, bool]:
    """A ``DataLoader`` sharded over processes (gathered back in order), or any other iterable as is."""
    if isinstance(batches, DataLoader):
        return accelerator.prepare(batches), True
    loader = getattr(batches, "loader", None)
    if isinstance(loader, DataLoader):  # (images, labels) pairs of a user's DataLoader
        return PairsLoader(accelerator.prepare(loader)), True
    return batches, False


@torch.no_grad()
def _extract(accelerator: Accelerator, head: IntrospectiveHead, source: FeatureSource, factored: bool,
             partial: Path) -> float | None:
    """Stream every image's features into ``partial/features.safetensors``, resuming where a run stopped.

    Every process computes its batches of a sharded loader (the main process writes the gathered ones, in
    data order); an unsharded iterable is computed by every process. Returns M for a "-M" loss (fitted first
    on all images by the head's one statistics routine, and kept in the progress record).
    """
    n = len(source)
    progress_path = partial / "progress.json"
    accelerator.wait_for_everyone()  # the main process made the folder: every process reads the same record
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {}
    head.to(accelerator.device)
    show = accelerator.is_local_main_process
    m_value = progress.get("target_value")
    if head.target == "M":
        if m_value is None:
            def logits():
                loader, sharded = _prepared(accelerator, source.batches())
                for x, _ in tqdm(loader, desc="introspect: target M", disable=not show):
                    z = head.base_logits(x.to(accelerator.device))
                    yield accelerator.gather_for_metrics(z) if sharded else z

            m_value = fit_target(logits(), sync=False)  # the statistic of head.fit_statistics; all logits gathered
        head.target_value.fill_(m_value)
    done = int(progress.get("rows", 0))
    expected = source.labels() if hasattr(source, "labels") else None
    loader, sharded = _prepared(accelerator, source.batches(done))
    writer = None
    if done and accelerator.is_main_process:
        shapes = {k: (getattr(torch, dtype), tuple(shape)) for k, (dtype, shape) in progress["shapes"].items()}
        writer = StreamingFile(partial / "features.safetensors", shapes, create=False)
        log.info("introspect: resuming the extraction at image %d/%d (%s)", done, n, partial)
    last = time.monotonic()
    bar = tqdm(total=n, initial=done, desc="introspect: features", unit="img", disable=not show)
    row = done
    try:
        for x, y in loader:
            batch = _batch_tensors(head, x.to(accelerator.device), factored)
            batch["labels"] = y.to(accelerator.device)
            gathered = accelerator.gather_for_metrics(batch) if sharded else batch
            if accelerator.is_main_process:
                gathered = {k: t.cpu() if k == "labels" else t.float().cpu() for k, t in gathered.items()}
                rows = gathered["labels"]
                if expected is not None and not torch.equal(rows, expected[row : row + len(rows)]):
                    raise DataError(
                        f"the data yielded other labels from row {row} on than when it was first read: pass data that "
                        "yields the same images every time it is read, in the same order (no shuffling, e.g. "
                        "DataLoader(..., shuffle=False); H's training shuffles the features itself)")
                if writer is None:  # the shapes are known from the first batch
                    shapes = {k: (t.dtype, (n, *t.shape[1:])) for k, t in gathered.items()}
                    writer = StreamingFile(partial / "features.safetensors", shapes, create=True)
                    progress = {"rows": 0, "target_value": m_value,
                                "shapes": {k: (str(d).removeprefix("torch."), list(s)) for k, (d, s) in shapes.items()}}
                for k, t in gathered.items():
                    writer.write(k, row, t)
                row += len(gathered["labels"])
                if time.monotonic() - last > _PROGRESS_EVERY_S or row == n:
                    writer.sync()  # the rows first, then the record that counts them
                    progress["rows"] = row
                    tmp = progress_path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(progress))
                    os.replace(tmp, progress_path)
                    last = time.monotonic()
            bar.update(len(y) * (accelerator.num_processes if sharded else 1))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if accelerator.is_main_process and row != n:
        raise DataError(f"the data yielded {row} images, {n} when its key was computed: pass data that yields the "
                        "same images every time it is read (no shuffling, no random augmentation)")
    accelerator.wait_for_everyone()
    return m_value


@contextlib.contextmanager
def _entry_lock(cache_dir: Path, key: str, enabled: bool = True) -> Iterator[None]:
    """Hold ``<cache_dir>/.<key>.lock`` (``flock``) while the entry ``key`` is checked and extracted; another run
    holding it is waited for. Under ``accelerate launch`` only the main process locks (``enabled``)."""
    if not enabled:
        yield
        return
    path = cache_dir / f".{key}.lock"
    handle = open(path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("introspect: another run is extracting the same features (it holds %s); waiting for it to "
                     "finish, then reusing its entry", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def _read_entry(folder: Path, head: IntrospectiveHead, source: FeatureSource,
                factored: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """A cache entry (memory-mapped), checked against what it must hold; any mismatch raises."""
    meta = json.loads((folder / "meta.json").read_text())
    tensors = open_mapped(folder / "features.safetensors")
    n = len(source)
    if not isinstance(meta, dict) or meta.get("count") != n or meta.get("factored") is not factored:
        raise CheckpointError(f"meta.json does not describe {n} images in this form")
    if head.target == "M" and not math.isfinite(float(meta["target_value"])):
        raise CheckpointError("meta.json has no finite target M")
    labels = tensors["labels"]
    expected = source.labels() if hasattr(source, "labels") else None
    if tuple(labels.shape) != (n,) or (expected is not None and not torch.equal(labels, expected)):
        raise CheckpointError(f"labels of shape {tuple(labels.shape)} do not match the dataset's {n}")
    if factored:
        for i, c in enumerate(head.classifiers):
            num, dim = c.weight.shape[:2]
            delta, h = tensors[f"delta.{i}"], tensors[f"h.{i}"]
            if delta.shape[0] != n or delta.shape[-1] != num or h.shape[0] != n or h.shape[-1] != dim:
                raise CheckpointError(
                    f"factors of shapes {tuple(delta.shape)}, {tuple(h.shape)} for {n} x ({num}, {dim})")
    elif tuple(tensors["features"].shape) != (n, head.num_features):
        raise CheckpointError(
            f"features of shape {tuple(tensors['features'].shape)}, expected {(n, head.num_features)}")
    return tensors, meta


def _reuse(accelerator: Accelerator, folder: Path, head: IntrospectiveHead, source: FeatureSource, factored: bool,
           remove_damaged: bool) -> dict[str, torch.Tensor] | None:
    """The entry's tensors if it is there and sound (M set on ``head``), else ``None``; a damaged entry is removed
    when ``remove_damaged`` (under the entry's lock), to be extracted again."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        tensors, meta = _read_entry(folder, head, source, factored)
    except (CheckpointError, ValueError, KeyError, TypeError, OSError) as err:
        if not remove_damaged:
            return None
        # a damaged entry is rebuilt, not trusted (the rename of the new one puts a complete one in its place)
        log.warning("introspect: the cached features in %s are damaged (%s); extracting them again", folder, err)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)
        accelerator.wait_for_everyone()
        return None
    if head.target == "M":
        head.target_value.fill_(meta["target_value"])
    log.info("introspect: reusing cached features %s", folder)
    return tensors


def extract_features(
    accelerator: Accelerator,
    head: IntrospectiveHead,
    data: Any,
    cache_dir: str | Path,
    batch_size: int = 256,
    workers: int = 0,
    factored: bool = False,
) -> tuple[Features, torch.Tensor, Path]:
    """r_x of a dataset and its labels ``(n,)``, from the cache or extracted once: ``(features, labels, folder)``.

    ``data``: a :class:`~timm_introspect.data.images.LabeledImages` split (preprocessed for f with
    ``batch_size`` and ``workers``), any re-iterable of ``(images, labels)`` batches (e.g. a ``DataLoader``),
    or a :class:`~timm_introspect.training.sources.FeatureSource`.

    r_x comes raw and flat, ``(n, F)``, or with ``factored=True`` as ``{classifier: (delta, h)}`` (N + d
    numbers per image and position instead of N d; see :meth:`IntrospectiveHead.introspective_factors`).
    The tensors are memory-mapped from the cache file (read them in blocks, e.g. with :func:`iter_rows`,
    to keep memory bounded). For a "-M" loss, M (the mean max-logit over these images) is estimated
    first, set on ``head`` and stored with the entry. An interrupted extraction resumes where it stopped.
    """
    source = as_source(data, head.model, batch_size, workers)
    if len(source) == 0:
        where = source.describe()
        raise DataError(f"{where['source']} ({where['split']}) has no images: there is nothing to introspect")
    key = fingerprint(head, source, factored)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = cache_dir / key
    names = [c.name for c in head.classifiers]
    tensors = _reuse(accelerator, folder, head, source, factored, remove_damaged=False)  # complete or absent
    if tensors is None:
        with _entry_lock(cache_dir, key, enabled=accelerator.is_main_process):
            accelerator.wait_for_everyone()  # the main process holds the lock: every process sees the same folder
            tensors = _reuse(accelerator, folder, head, source, factored, remove_damaged=True)  # another run's?
            if tensors is None:
                partial = cache_dir / f".{key}.partial"
                if accelerator.is_main_process:
                    partial.mkdir(exist_ok=True)
                m_value = _extract(accelerator, head, source, factored, partial)
                if accelerator.is_main_process:  # complete: described, then renamed into place
                    (partial / "meta.json").write_text(json.dumps({
                        "key": key, "count": len(source), "factored": factored, "classifiers": names,
                        "num_features": head.num_features, "loss": head.loss, "target": head.target,
                        "target_value": m_value, **source.describe()}, indent=2))
                    (partial / "progress.json").unlink()
                    try:
                        os.replace(partial, folder)
                    except OSError:  # an entry appeared meanwhile (a run not using the lock): as good as this one
                        shutil.rmtree(partial, ignore_errors=True)
                accelerator.wait_for_everyone()
                tensors, _ = _read_entry(folder, head, source, factored)
    if factored:
        features: Features = {n: (tensors[f"delta.{i}"], tensors[f"h.{i}"]) for i, n in enumerate(names)}
    else:
        features = tensors["features"]
    return features, tensors["labels"], folder
