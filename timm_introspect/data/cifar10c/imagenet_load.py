"""Reading ImageNet-C: the release's JPEG folders (``<corruption>/<severity>/<wnid>/<file>.JPEG``, as
:func:`~timm_introspect.data.cifar10c.imagenet.write_imagenet_c` writes them), a dataset of its rows, or a Hub
repository of either; seeded subsets decode only the images they take."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataError, InvalidArgumentError
from .corruptions import CORRUPTIONS
from .imagenet import IMAGE_EXTENSIONS, SEVERITIES
from .release import hub_files, row_columns

__all__ = ["load_imagenet_c"]

MANIFEST = "manifest.json"  # what write_imagenet_c records beside the sets: their class order among the rest


def _stack(pils, where: str) -> np.ndarray:
    """Decode images to one uint8 ``(n, H, W, 3)`` array; images of different sizes are refused."""
    out = None
    for i, (img, label) in enumerate(pils):
        arr = np.asarray(img.convert("RGB"))
        if out is None:
            out = np.empty((len(pils), *arr.shape), dtype=np.uint8)
        elif arr.shape != out.shape[1:]:
            raise DataError(f"{label} in {where} is {arr.shape[1]}x{arr.shape[0]}, the others "
                            f"{out.shape[2]}x{out.shape[1]}: an ImageNet-C folder holds images of one size")
        out[i] = arr
    return out


class _Lazy:
    """A file opened only when decoded (so a folder of 50,000 images is never open at once)."""

    def __init__(self, path: Path):
        self.path = path

    def convert(self, mode: str) -> Image.Image:
        try:
            with Image.open(self.path) as img:
                return img.convert(mode)
        except OSError as err:
            raise DataError(f"{self.path} is not a readable image ({err}); make or download it again") from err


def _label_indices(wnids: list[str], classes: Sequence[str] | None, where: str,
                   present: Sequence[str] | None = None) -> np.ndarray:
    """Labels: each wnid's index in ``classes``; by default in the sorted class folders ``present`` (all of
    them, images or not, as ImageFolder counts them), else in the sorted wnids found."""
    order = list(classes) if classes is not None else sorted(set(wnids) if present is None else present)
    index = {c: i for i, c in enumerate(order)}
    missing = sorted(set(wnids) - set(index))
    if missing:
        raise DataError(f"{where} has classes {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} that "
                        "are not in classes=: pass the dataset's full list of wnids")
    return np.array([index[w] for w in wnids], dtype=np.int64)


def _recorded_classes(root: Path) -> list[str] | None:
    """The class order ``write_imagenet_c`` recorded in ``<root>/manifest.json`` (its folders in label order), or
    ``None`` (a release, or a set written from wnid labels: the sorted folders are the order)."""
    import json

    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    order = manifest.get("classes") if isinstance(manifest, dict) else None
    if isinstance(order, list) and order and all(isinstance(c, str) for c in order) and len(set(order)) == len(order):
        return order
    return None


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Positions ``0..n-1`` to read: all, or a seeded subset of ``limit`` of them, in order."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def _from_folder(folder: Path, classes: Sequence[str] | None, limit: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    entries = []
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    for cls in class_dirs:
        for f in sorted(cls.iterdir()):
            if f.name.startswith(".") or not f.name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if not f.is_file():  # a FIFO, a device: never read
                raise DataError(f"{f} is not a regular file: refusing to read it; replace it with the real image")
            entries.append((cls.name, f))
    if not entries:
        raise DataError(f"{folder} holds no images in class folders (<wnid>/<file>.JPEG): not ImageNet-C's layout")
    labels = _label_indices([w for w, _ in entries], classes, str(folder), [d.name for d in class_dirs])
    keep = _subset(len(entries), limit, seed)  # only these are decoded
    entries = [entries[i] for i in keep]
    return _stack([(_Lazy(f), f"{w}/{f.name}") for w, f in entries], str(folder)), labels[keep]


def _from_release(root: Path, key: str, classes: Sequence[str] | None, limit: int | None,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``<root>/<corruption>/<severity>`` of a release (a local folder, or a Hub repo's copy): labelled by
    ``classes``, else by the class order ``<root>/manifest.json`` records, else by the sorted folders."""
    return _from_folder(root / key, classes if classes is not None else _recorded_classes(root), limit, seed)


def _from_imagenet_rows(ds, corruption: str, severity: int, classes: Sequence[str] | None,
                        where: str, limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One ``(corruption, severity)`` of rows ``(image, label, corruption, severity[, index])``."""
    image, label, name, level, index = row_columns(ds, where, "ImageNet-C")
    names = np.asarray(ds[name])
    levels = np.asarray(ds[level]).astype(int)
    rows = np.flatnonzero((names == corruption) & (levels == severity))
    if not len(rows):
        found = sorted({f"{c}/{s}" for c, s in zip(names.tolist(), levels.tolist(), strict=True)})
        raise DataError(f"{where} has no rows of {corruption!r} at severity {severity}; it has "
                        f"{', '.join(found[:20])}{' ...' if len(found) > 20 else ''}")
    if index:
        rows = rows[np.argsort(np.asarray(ds[index])[rows], kind="stable")]
    rows = rows[_subset(len(rows), limit, seed)]  # only these are decoded
    raw = np.asarray(ds[label])[rows]
    if raw.dtype.kind in "US":  # wnids as labels
        labels = _label_indices(raw.tolist(), classes, where)
    elif raw.dtype.kind in "iu" and (not len(raw) or raw.min() >= 0):
        labels = raw.astype(np.int64)
    else:
        raise DataError(f"the {label!r} column of {where} holds {raw.dtype}: labels are class indices >= 0 or wnids")
    subset = ds.select(rows.tolist())
    return _stack([(img, f"row {r}") for img, r in zip(subset[image], rows.tolist(), strict=True)], where), labels


def load_imagenet_c(
    source: str | Path, corruption: str, severity: int, classes: Sequence[str] | None = None, *,
    revision: str | None = None, split: str = "test", config: str | None = None,
    cache_dir: str | Path | None = None, limit: int | None = None, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One corruption at one severity of ImageNet-C: ``(images (n, H, W, 3) uint8, labels (n,) int64)``.

    ``source`` is one of: a folder in the release's layout (``<corruption>/<severity>/<wnid>/<file>``),
    read as torchvision's ``ImageFolder`` reads it (by class, then by file name); a folder of rows that
    ``datasets`` reads (Parquet, ...) with image, label, corruption name and severity columns (rows keep
    their order, or follow an ``index`` column); or a dataset repo on the Hub holding either (of the
    layout, only the asked-for folder is downloaded). Labels are the index of each image's wnid in
    ``classes`` (e.g. the 1,000 ImageNet wnids in order), by default among the sorted wnids present;
    integer labels in rows are kept; a folder written by ``write_imagenet_c`` with ``classes=`` labels by the class
    order its ``manifest.json`` records. The images are decoded into memory (about 7.5 GB for 50,000): with
    ``limit``, only a seeded subset of ``limit`` positions (the same in every set of one release, for a given
    ``seed``), kept in order.
    """
    if limit is not None and limit < 1:
        raise InvalidArgumentError(f"limit must be a positive number of images, got {limit}")
    if corruption not in CORRUPTIONS:
        raise InvalidArgumentError(f"unknown corruption {corruption!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise InvalidArgumentError(f"severity must be 1..5, got {severity!r}")
    if classes is not None:
        classes = list(classes)
        if len(set(classes)) != len(classes):
            raise InvalidArgumentError("classes= names a wnid twice: pass each class once, in label order")
    key = f"{corruption}/{severity}"
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{path} is not a folder: pass ImageNet-C's folder (<corruption>/<severity>/<wnid>/...) "
                            "or a folder of rows")
        if (path / key).is_dir():
            return _from_release(path, key, classes, limit, seed)
        present = [c for c in CORRUPTIONS if (path / c).is_dir()]
        if present:
            raise DataError(f"{path} lacks {key} (it has {', '.join(present)}): generate it with write_imagenet_c "
                            "or pass the folder that holds it")
        import datasets

        try:
            rows = datasets.load_dataset(str(path), config, split=split, cache_dir=cache_dir)
        except (FileNotFoundError, ValueError) as err:
            raise DataError(f"{path} is neither ImageNet-C's layout nor rows that datasets reads ({err})") from err
        return _from_imagenet_rows(rows, corruption, severity, classes, str(path), limit, seed)
    return _from_hub(str(source), corruption, severity, classes, revision, split, config, cache_dir, limit, seed)


def _from_hub(repo: str, corruption: str, severity: int, classes, revision, split, config,
              cache_dir, limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from huggingface_hub import snapshot_download

    key = f"{corruption}/{severity}"
    try:
        files = hub_files(repo, revision)
    except DataError:
        raise
    except Exception as err:  # offline, no network: the layout's folder if it is in the cache
        try:
            folder = Path(snapshot_download(repo, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                            allow_patterns=[f"{key}/*", f"*/{key}/*", MANIFEST, f"*/{MANIFEST}"],
                                            local_files_only=True))
        except Exception:
            folder = None
        found = [p for p in folder.glob(f"**/{key}") if p.is_dir()] if folder else []
        if not found:
            raise DataError(f"cannot reach the Hub for {repo} and its {key} is not in the cache "
                            f"({type(err).__name__}); connect, or pass a local folder") from err
        return _from_release(found[0].parent.parent, key, classes, limit, seed)
    layout = re.compile(rf"(?:(.*)/)?{re.escape(key)}/[^/]+/[^/]+$")
    prefixes = {m.group(1) or "" for f in files if (m := layout.match(f))
                and f.lower().endswith(IMAGE_EXTENSIONS)}
    if len(prefixes) > 1:
        raise DataError(f"{repo} holds {key} in {len(prefixes)} places ({', '.join(sorted(prefixes))}): which one "
                        "is meant is ambiguous")
    if prefixes:
        prefix = prefixes.pop()
        root = f"{prefix}/" if prefix else ""
        folder = Path(snapshot_download(repo, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                        allow_patterns=[f"{root}{key}/*", f"{root}{MANIFEST}"]))  # its class order
        return _from_release(folder / prefix, key, classes, limit, seed)
    import datasets

    try:
        rows = datasets.load_dataset(repo, config, revision=revision, split=split, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"{repo} holds neither ImageNet-C's layout ({key}/<wnid>/<file>) nor rows that datasets "
                        f"reads ({err})") from err
    return _from_imagenet_rows(rows, corruption, severity, classes, repo, limit, seed)
