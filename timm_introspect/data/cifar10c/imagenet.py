"""ImageNet-C: the generator's preprocessing, and its release's layout of JPEG files.

Hendrycks & Dietterich's ImageNet generator (``make_imagenet_c.py``) reads each validation image as RGB,
applies torchvision's ``Resize(256)`` and ``CenterCrop(224)``, corrupts it with the ImageNet parameters
(:func:`~timm_introspect.data.cifar10c.corrupt` with ``dataset="imagenet"``) and saves
``Image.fromarray(np.uint8(img)).save(path, quality=85, optimize=True)`` at
``<corruption>/<severity>/<wnid>/<file name of the source image>``. Its evaluation reads one
``<corruption>/<severity>`` folder with torchvision's ``ImageFolder``: the label is the index of the
class folder among the sorted ones, the images come by class, then by file name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataError, InvalidArgumentError
from .corruptions import CORRUPTIONS, IMAGENET_SIZE, corrupt
from .release import GENERATOR_VERSION, _hub_files, _row_columns

__all__ = ["IMAGE_EXTENSIONS", "JPEG_OPTIONS", "imagenet_preprocess", "load_imagenet_c", "write_imagenet_c"]

#: How the original saves each corrupted image (PIL's JPEG writer, chosen by the ``.JPEG`` name).
JPEG_OPTIONS = {"quality": 85, "optimize": True}
#: The extensions torchvision's ImageFolder reads (the loader takes the same).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_RESIZE = 256
_SEVERITIES = (1, 2, 3, 4, 5)


def imagenet_preprocess(img: Image.Image | np.ndarray) -> np.ndarray:
    """The generator's preprocessing: RGB, torchvision's ``Resize(256)`` (the short side to 256, bilinear),
    then ``CenterCrop(224)``; a ``(224, 224, 3)`` uint8 array. ``img`` is a PIL image or a uint8 array."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise InvalidArgumentError(
                f"expected a PIL image or a uint8 (H, W[, C]) array, got {img.dtype} {img.shape}")
        img = Image.fromarray(img)
    if not isinstance(img, Image.Image):
        raise InvalidArgumentError(f"expected a PIL image or a uint8 array, got {type(img).__name__}")
    img = img.convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(_RESIZE * long / short)  # torchvision's size for the long side: truncated
    size = (_RESIZE, new_long) if w <= h else (new_long, _RESIZE)
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    top = int(round((img.size[1] - IMAGENET_SIZE) / 2.0))
    left = int(round((img.size[0] - IMAGENET_SIZE) / 2.0))
    return np.asarray(img.crop((left, top, left + IMAGENET_SIZE, top + IMAGENET_SIZE)))


# --- writing the layout --------------------------------------------------------------------------------

_NAME = re.compile(r"[^/\\\x00]+")


def _component(name: str, what: str) -> str:
    """``name`` if it is one plain path component (no separator, not hidden, not ``..``), else an error."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.startswith(".") or name != name.strip():
        raise InvalidArgumentError(f"{what} {name!r} cannot be a file or folder name: use a plain name such as "
                                   "n01440764 or ILSVRC2012_val_00000001.JPEG (no '/', not starting with '.')")
    return name


def _class_folders(labels, classes: Sequence[str] | None, n: int) -> list[str]:
    """The class folder of each image: the wnids as given, or integer labels named through ``classes``
    (without it, zero-padded numbers, which sort in numeric order)."""
    labels = list(labels) if not isinstance(labels, np.ndarray) else labels.tolist()
    if len(labels) != n:
        raise InvalidArgumentError(f"{len(labels)} labels for {n} images: pass one wnid or class index per image")
    if all(isinstance(v, str) for v in labels):
        if classes is not None:
            raise InvalidArgumentError("classes= names the folders of integer labels; these labels are already "
                                       "folder names (wnids): leave classes out")
        return [_component(v, "wnid") for v in labels]
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in labels):
        raise InvalidArgumentError("labels must be all wnids (str, e.g. 'n01440764') or all class indices (int)")
    if labels and min(labels) < 0:
        raise InvalidArgumentError(f"class indices must be >= 0, got {min(labels)}")
    if classes is None:
        width = len(str(max(labels, default=0)))
        return [f"{v:0{width}d}" for v in labels]
    classes = [_component(c, "class name") for c in classes]
    if labels and max(labels) >= len(classes):
        raise InvalidArgumentError(f"class index {max(labels)} but only {len(classes)} classes= names")
    return [classes[v] for v in labels]


def _file_names(files: Sequence[str] | None, n: int) -> list[str]:
    if files is None:
        return [f"{i:08d}.JPEG" for i in range(n)]
    files = list(files)
    if len(files) != n:
        raise InvalidArgumentError(f"{len(files)} file names for {n} images: pass one per image")
    for f in files:
        if not _component(f, "file name").lower().endswith((".jpeg", ".jpg")):
            raise InvalidArgumentError(f"file name {f!r}: ImageNet-C's files are JPEG (quality 85); name them "
                                       "like the source images, e.g. ILSVRC2012_val_00000001.JPEG")
    return files


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        manifest = {}
    return manifest if isinstance(manifest, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _folder_keys(manifest: dict) -> set[str]:
    """The ``<corruption>/<severity>`` folders a manifest vouches for (finished or being written), only
    by their known names: a crafted manifest naming ``../x`` is never followed."""
    known = {f"{c}/{s}" for c in CORRUPTIONS for s in _SEVERITIES}
    done = manifest.get("done")
    keys = set(done) if isinstance(done, dict) else set()
    keys.add(manifest.get("writing"))
    return {k for k in keys if isinstance(k, str) and k in known}


def _folder_size(folder: Path, paths: list[str]) -> tuple[int, int]:
    """(files present, their total bytes) of the expected ``paths`` under ``folder``."""
    count = total = 0
    for p in paths:
        try:
            total += (folder / p).stat().st_size
            count += 1
        except OSError:
            pass
    return count, total


def _remove_ours(folder: Path, paths: list[str]) -> None:
    """Delete the generator's files (and its unfinished ``.partial`` ones) from one severity folder."""
    if not folder.is_dir():
        return
    for sub in folder.iterdir():
        if sub.is_dir() and not sub.is_symlink():
            for f in sub.glob(".*.partial"):
                f.unlink(missing_ok=True)
    for p in paths:
        (folder / p).unlink(missing_ok=True)
    for sub in folder.iterdir():
        if sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
            sub.rmdir()


def _check_ours(out_dir: Path, ours: set[str], paths: set[str]) -> None:
    """Refuse a folder holding ImageNet-C files this generator did not write (they would mix with ours)."""
    for c in CORRUPTIONS:
        top = out_dir / c
        if not top.exists():
            continue
        if not top.is_dir() or top.is_symlink():
            raise DataError(f"{top} is not a folder this generator wrote (a file or a link): choose an empty folder")
        for entry in top.iterdir():
            if f"{c}/{entry.name}" not in ours or not entry.is_dir() or entry.is_symlink():
                raise DataError(f"{out_dir} holds {c}/{entry.name}, not written by this generator: choose an empty "
                                "folder (the set would mix its images with others)")
            for sub in entry.iterdir():  # class folders: real folders of the expected files only (links refused)
                if not sub.is_dir() or sub.is_symlink():
                    raise DataError(f"{entry} holds {sub.name}, a file or link where this generator writes class "
                                    "folders: choose an empty folder")
                stray = [f.name for f in sub.iterdir() if not f.name.endswith(".partial")
                         and f"{sub.name}/{f.name}" not in paths]
                if stray:
                    raise DataError(f"{entry} holds {sub.name}/{stray[0]}, not written by this generator: choose an "
                                    "empty folder (the set would mix its images with others)")


def write_imagenet_c(
    out_dir: str | Path, images: np.ndarray, labels: Sequence[str] | Sequence[int] | np.ndarray,
    files: Sequence[str] | None = None, *, classes: Sequence[str] | None = None,
    corruptions: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = _SEVERITIES, seed: int = 0,
    frost_dir: str | Path | None = None, chunk: int = 100, progress: bool = True,
) -> dict:
    """Write ImageNet-C's layout, ``<corruption>/<severity>/<wnid>/<file>``, as the original saves it.

    ``images``: ``(n, 224, 224, 3)`` uint8 (:func:`imagenet_preprocess` makes them from the source files).
    ``labels``: each image's wnid (its class folder), or integer class indices named by ``classes``
    (without it, zero-padded numbers). ``files``: each image's file name, ``.JPEG`` as the source's
    (default ``00000000.JPEG``, ...). Each JPEG is saved with :data:`JPEG_OPTIONS` under a temporary name,
    then renamed. Each ``(corruption, severity)`` folder has its own generator, seeded by
    ``(seed, the corruption's index in CORRUPTIONS, severity)``, corrupting ``chunk`` images at a time.
    Finished folders are listed in ``manifest.json`` with the settings; run again with the same images,
    labels, files, seed, chunk, frost folder and generator version, they are kept (an interrupted run
    resumes), with other settings this generator's earlier files are deleted. A folder holding ImageNet-C
    files this generator did not write is refused.
    Returns ``{"seconds": {corruption: seconds}, "reused": ["<corruption>/<severity>", ...], "images": n}``.
    """
    from tqdm.auto import tqdm

    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise InvalidArgumentError(f"unknown corruption(s) {', '.join(map(str, unknown))}; choose from "
                                   f"{', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if s not in _SEVERITIES]
    if bad or not len(severities):
        raise InvalidArgumentError(f"severities must be some of 1..5, got {list(severities)}")
    if not isinstance(chunk, int) or chunk < 1:
        raise InvalidArgumentError(f"chunk must be a positive integer, got {chunk!r}")
    if "frost" in corruptions and frost_dir is None:
        raise InvalidArgumentError("frost needs the frost overlay images: pass frost_dir= (a folder with "
                                   "frost1.png ... frost5.jpg)")
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (IMAGENET_SIZE, IMAGENET_SIZE, 3):
        raise InvalidArgumentError(f"expected uint8 images of shape (n, 224, 224, 3), got {images.dtype} "
                                   f"{images.shape}: make them with imagenet_preprocess")
    folders = _class_folders(labels, classes, len(images))
    paths = [f"{w}/{f}" for w, f in zip(folders, _file_names(files, len(images)), strict=True)]
    twice = [p for p, k in Counter(paths).items() if k > 1]
    if twice:
        raise InvalidArgumentError(f"two images would be saved as {twice[0]}: give each image of a class its own "
                                   "file name")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"generator": GENERATOR_VERSION, "dataset": "imagenet", "seed": seed, "chunk": chunk,
                "jpeg": JPEG_OPTIONS,
                "frost_dir": str(Path(frost_dir).resolve()) if frost_dir is not None else None,
                "images_md5": hashlib.md5(images.reshape(-1).data).hexdigest(),  # no copy of the images
                "paths_md5": hashlib.md5("\n".join(paths).encode()).hexdigest()}
    manifest_path = out_dir / "manifest.json"
    manifest = _read_manifest(manifest_path)
    ours = _folder_keys(manifest)
    old_paths = manifest.get("paths")
    old_paths = [p for p in old_paths if isinstance(p, str) and p.count("/") == 1 and ".." not in p.split("/")
                 and all(_NAME.fullmatch(part) for part in p.split("/"))] if isinstance(old_paths, list) else []
    _check_ours(out_dir, ours, set(old_paths))
    same = manifest.get("settings") == settings
    done = {k: v for k, v in manifest["done"].items() if k in ours} if same and isinstance(
        manifest.get("done"), dict) else {}
    for key in ours - set(done):  # from other images or settings, or unfinished: never left beside new ones
        _remove_ours(out_dir / key, old_paths)
        for d in (out_dir / key, (out_dir / key).parent):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    manifest = {"settings": settings, "done": done, "writing": None, "paths": paths}
    _write_json(manifest_path, manifest)

    todo = [(c, s) for c in corruptions for s in severities]
    seconds: dict[str, float] = {}
    reused: list[str] = []
    bar = tqdm(total=len(todo) * len(images), unit="img", desc="ImageNet-C", disable=not progress)
    for name, severity in todo:
        key = f"{name}/{severity}"
        folder = out_dir / key
        if key in done and done[key] == list(_folder_size(folder, paths)):
            reused.append(key)
            bar.update(len(images))
            continue
        manifest["done"].pop(key, None)
        manifest["writing"] = key
        _write_json(manifest_path, manifest)
        _remove_ours(folder, paths)
        start = time.perf_counter()
        rng = np.random.default_rng([seed, CORRUPTIONS.index(name), severity])
        for wnid in sorted(set(folders)):
            (folder / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(0, len(images), chunk):
            out = corrupt(images[i : i + chunk], name, severity, rng, frost_dir=frost_dir, dataset="imagenet")
            for img, path in zip(out, paths[i : i + chunk], strict=True):
                target = folder / path
                tmp = target.with_name(f".{target.name}.partial")
                Image.fromarray(img).save(tmp, format="JPEG", **JPEG_OPTIONS)
                os.replace(tmp, target)  # an interrupted run never leaves a truncated image under its name
            bar.set_postfix_str(key)
            bar.update(len(out))
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        manifest["done"][key] = list(_folder_size(folder, paths))
        manifest["writing"] = None
        _write_json(manifest_path, manifest)
    bar.close()
    return {"seconds": seconds, "reused": reused, "images": len(images)}


# --- reading it -----------------------------------------------------------------------------------------


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


def _from_imagenet_rows(ds, corruption: str, severity: int, classes: Sequence[str] | None,
                        where: str, limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One ``(corruption, severity)`` of rows ``(image, label, corruption, severity[, index])``."""
    image, label, name, level, index = _row_columns(ds, where, "ImageNet-C")
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
    integer labels in rows are kept. The images are decoded into memory (about 7.5 GB for 50,000): with
    ``limit``, only a seeded subset of ``limit`` positions (the same in every set of one release, for a given
    ``seed``), kept in order.
    """
    if limit is not None and limit < 1:
        raise InvalidArgumentError(f"limit must be a positive number of images, got {limit}")
    if corruption not in CORRUPTIONS:
        raise InvalidArgumentError(f"unknown corruption {corruption!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in _SEVERITIES:
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
            return _from_folder(path / key, classes, limit, seed)
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
        files = _hub_files(repo, revision)
    except DataError:
        raise
    except Exception as err:  # offline, no network: the layout's folder if it is in the cache
        try:
            folder = Path(snapshot_download(repo, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                            allow_patterns=[f"{key}/*", f"*/{key}/*"], local_files_only=True))
        except Exception:
            folder = None
        found = [p for p in folder.glob(f"**/{key}") if p.is_dir()] if folder else []
        if not found:
            raise DataError(f"cannot reach the Hub for {repo} and its {key} is not in the cache "
                            f"({type(err).__name__}); connect, or pass a local folder") from err
        return _from_folder(found[0], classes, limit, seed)
    layout = re.compile(rf"(?:(.*)/)?{re.escape(key)}/[^/]+/[^/]+$")
    prefixes = {m.group(1) or "" for f in files if (m := layout.match(f))
                and f.lower().endswith(IMAGE_EXTENSIONS)}
    if len(prefixes) > 1:
        raise DataError(f"{repo} holds {key} in {len(prefixes)} places ({', '.join(sorted(prefixes))}): which one "
                        "is meant is ambiguous")
    if prefixes:
        prefix = prefixes.pop()
        pattern = f"{prefix}/{key}/*" if prefix else f"{key}/*"
        folder = Path(snapshot_download(repo, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                        allow_patterns=[pattern]))
        return _from_folder(folder / prefix / key, classes, limit, seed)
    import datasets

    try:
        rows = datasets.load_dataset(repo, config, revision=revision, split=split, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"{repo} holds neither ImageNet-C's layout ({key}/<wnid>/<file>) nor rows that datasets "
                        f"reads ({err})") from err
    return _from_imagenet_rows(rows, corruption, severity, classes, repo, limit, seed)
