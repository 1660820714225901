"""Decoding a dataset's images, and finding its source and columns: every failure named, nothing read wrongly.

* :func:`decode_image`: a row's image in a PIL mode; an unreadable file, a decompression bomb or a path that
  is not a regular file (a FIFO would block) is a :class:`~timm_introspect.errors.DataError` naming the image;
  16-bit images are scaled to 8 bits, not clipped to white.
* :func:`stack_images`: decoded images as one array; an image of another size is named.
* :func:`local_source`: a ``--data`` that names a local place: absolute, and refused when it does not exist
  (rather than looked up on the Hub and reported as "offline?").
* :func:`image_column`: the image column, required when a dataset has several.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

__all__ = ["decode_image", "image_column", "local_source", "stack_images", "to_8bit"]

#: PIL modes of 16- and 32-bit integer images (16-bit PNG / TIFF): scaled from 0..65535, not clipped at 255
_WIDE = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image (``I;16`` / ``I``) as 8-bit ``L``, scaled (``v / 257``); PIL's ``convert`` would
    clip every value above 255 to white. Other images are returned as they are."""
    if image.mode not in _WIDE:
        return image
    arr = np.asarray(image).astype(np.float64)
    return Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), "L")


def decode_image(item: dict[str, Any] | Image.Image, mode: str) -> Image.Image:
    """A dataset row's image (a PIL image, or the ``datasets`` dict of its bytes / path) as a PIL image in ``mode``."""
    if isinstance(item, Image.Image):
        return to_8bit(item).convert(mode)
    where = item.get("path") or "an embedded image"
    try:
        if item.get("bytes") is not None:
            image = Image.open(io.BytesIO(item["bytes"]))
        else:
            path = Path(item["path"])
            if path.exists() and not path.is_file():  # a FIFO would block open() forever
                raise DataError(f"image {str(path)!r} is not a regular file (a folder, a FIFO or a device); replace "
                                "it with the image or remove it from the dataset")
            image = Image.open(path)
        image.load()
    except Image.DecompressionBombError as err:
        raise DataError(f"image {where!r} is too large to decode safely ({err}); it may be a decompression bomb: "
                        "remove it, or resize it first") from err
    except (UnidentifiedImageError, OSError, ValueError, TypeError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot read image {where!r} ({err}); fix or remove it from the dataset") from err
    return to_8bit(image).convert(mode)


def stack_images(items: Iterable[Any], convert: Callable[[Any], np.ndarray], where: str) -> np.ndarray:
    """``convert`` each item and stack the results; an image whose shape differs from the first's is named
    (row number, and its file when known) instead of numpy's "same shape" error."""
    arrays: list[np.ndarray] = []
    for i, item in enumerate(items):
        arr = np.asarray(convert(item))
        if arrays and arr.shape != arrays[0].shape:
            name = item.get("path") if isinstance(item, dict) else None
            raise DataError(f"{where}: image {i}{f' ({name})' if name else ''} is {arr.shape[1]}x{arr.shape[0]} px, "
                            f"image 0 {arrays[0].shape[1]}x{arrays[0].shape[0]}: these images must have one size; "
                            "resize them, or pass a model (its preprocessing resizes)")
        arrays.append(arr)
    if not arrays:
        raise DataError(f"{where} has no images")
    return np.stack(arrays)


def local_source(source: str) -> str:
    """``source`` as an absolute path when it is a local place (it exists, or is written as a path: ``./x``,
    ``/x``, ``~/x``, ``../x``, or with more than one ``/``); a Hub id (``owner/name``) as given. A local place
    that does not exist is refused: looked up on the Hub it would be reported as a network problem."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    looks_local = text.startswith(("/", "./", "../", "~", ".\\")) or text.count("/") > 1 or "\\" in text
    if looks_local:
        raise DataError(f"the folder {text!r} does not exist ({path.absolute()}): check the path (a Hub dataset id "
                        "is written owner/name)")
    return text


def image_column(features: datasets.Features, source: str, given: str | None) -> str:
    """The image column: ``given`` (checked to hold images), else the only ``Image`` feature; with several, the
    caller must name one (a mask or a second view would otherwise be read as the image)."""
    if given is not None:
        if given not in features:
            raise DataError(f"{source} has no column {given!r}; its columns are {list(features)}")
        feature = features[given]
        is_image = isinstance(feature, datasets.Image) or (
            isinstance(feature, dict) and ("bytes" in feature or "path" in feature)) or (
            isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary", "string",
                                                                     "large_string"))
        if not is_image:
            raise DataError(f"column {given!r} of {source} holds {feature}, not images: name the image column with "
                            "image_column=")
        return given
    found = [k for k, f in features.items() if isinstance(f, datasets.Image)]
    if not found:
        raise DataError(f"{source} has no image column (columns: {list(features)}): name it with image_column=")
    if len(found) > 1:
        raise DataError(f"{source} has {len(found)} image columns ({', '.join(found)}): name the one to use with "
                        "image_column=")
    return found[0]
