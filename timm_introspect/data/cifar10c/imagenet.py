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
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataError, InvalidArgumentError
from ..outputs import atomic_open, write_json
from .corruptions import CORRUPTIONS, IMAGENET_SIZE, corrupt
from .release import GENERATOR_VERSION

__all__ = ["IMAGE_EXTENSIONS", "JPEG_OPTIONS", "SEVERITIES", "imagenet_preprocess", "write_imagenet_c"]

#: How the original saves each corrupted image (PIL's JPEG writer, chosen by the ``.JPEG`` name).
JPEG_OPTIONS = {"quality": 85, "optimize": True}
#: The extensions torchvision's ImageFolder reads (the loader takes the same).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_RESIZE = 256
SEVERITIES = (1, 2, 3, 4, 5)


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
    write_json(path, data, indent=1)  # a new file renamed over the old: no link followed


def _folder_keys(manifest: dict) -> set[str]:
    """The ``<corruption>/<severity>`` folders a manifest vouches for (finished or being written), only
    by their known names: a crafted manifest naming ``../x`` is never followed."""
    known = {f"{c}/{s}" for c in CORRUPTIONS for s in SEVERITIES}
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
    corruptions: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES, seed: int = 0,
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
    With ``classes``, ``manifest.json`` records them (``"classes"``, the folders in label order), and
    :func:`~timm_introspect.data.cifar10c.load_imagenet_c` labels by that order rather than by sorted folder names.
    Returns ``{"seconds": {corruption: seconds}, "reused": ["<corruption>/<severity>", ...], "images": n,
    "classes": the recorded order or None}``.
    """
    from ...log import tqdm

    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise InvalidArgumentError(f"unknown corruption(s) {', '.join(map(str, unknown))}; choose from "
                                   f"{', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if s not in SEVERITIES]
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
    # the class folders in label order (integer labels named by classes=): a reader labels by this order, not by
    # the folders' sorted names (the Hub's ImageNet-style names do not sort in class order)
    order = [str(c) for c in classes] if classes is not None else None
    manifest = {"settings": settings, "done": done, "writing": None, "paths": paths, "classes": order}
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
                # an interrupted run never leaves a truncated image under its name; no planted link is followed
                with atomic_open(folder / path) as fh:
                    Image.fromarray(img).save(fh, format="JPEG", **JPEG_OPTIONS)
            bar.set_postfix_str(key)
            bar.update(len(out))
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        manifest["done"][key] = list(_folder_size(folder, paths))
        manifest["writing"] = None
        _write_json(manifest_path, manifest)
    bar.close()
    return {"seconds": seconds, "reused": reused, "images": len(images), "classes": order}


# --- reading it -----------------------------------------------------------------------------------------
