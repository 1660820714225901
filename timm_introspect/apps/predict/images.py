"""Images to predict on, from files, PIL images or arrays, as the model's input: every failure named.

Any mode and size is accepted: 16-bit images are scaled to 8 bits, grayscale and RGBA images are converted to
the model's channels (``PIL.Image.convert``, as its training images were), and the model's own evaluation
preprocessing (:func:`~timm_introspect.data.images.make_transform`: resize, crop, mean and std) makes the batch.
A file that is not an image, a folder, a FIFO, or an image over PIL's decompression-bomb limit raises
:class:`~timm_introspect.errors.DataError` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from ...data.decode import to_8bit
from ...data.images import make_transform
from ...errors import DataError

__all__ = ["ImageInput", "expand_folders", "image_batch", "read_image"]

#: what :func:`timm_introspect.predict_images` takes for one image
ImageInput = str | Path | Image.Image | np.ndarray


def _check_size(image: Image.Image, name: str) -> None:
    """The limit ``Image.open`` applies to files (twice ``Image.MAX_IMAGE_PIXELS``), for images given in memory."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > 2 * limit:
        raise DataError(f"image {name} has {image.width * image.height} pixels ({image.width}x{image.height}), over "
                        f"PIL's decompression-bomb limit of {2 * limit}: resize it first")


def _open(path: Path) -> Image.Image:
    name = repr(str(path))
    if not path.exists():
        raise DataError(f"image {name} does not exist")
    if not path.is_file():  # a FIFO would block open() forever; a folder is no image
        raise DataError(f"image {name} is not a regular file (a folder, a FIFO or a device): pass image files")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except Image.DecompressionBombError as err:
        raise DataError(f"image {name} is too large to decode safely ({err}); it may be a decompression bomb: resize "
                        "it first") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{name} is not an image this library can read ({type(err).__name__}: {err}); pass PNG, "
                        "JPEG, BMP, GIF, TIFF or WebP files") from err


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    """A ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array: uint8, uint16, or floats in [0, 1]."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise DataError(f"image {name} is an array of shape {array.shape}: pass (H, W), (H, W, 3) or (H, W, 4) pixels")
    if array.dtype == np.uint16 and array.ndim == 2:
        return to_8bit(Image.fromarray(array.astype(np.int32), "I"))
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise DataError(f"image {name} is a float array outside [0, 1]: pass uint8 pixels or floats in [0, 1]")
        array = np.rint(array * 255)
    elif array.dtype != np.uint8:
        raise DataError(f"image {name} is a {array.dtype} array: pass uint8 pixels (or floats in [0, 1])")
    return Image.fromarray(np.ascontiguousarray(array.astype(np.uint8)))


def read_image(image: ImageInput, name: str) -> Image.Image:
    """One input as a PIL image (any mode), checked; ``name`` says which input in messages."""
    if isinstance(image, (str, Path)):
        return _open(Path(image))
    if isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        pil = _from_array(image, name)
    else:
        raise DataError(f"image {name} is a {type(image).__name__}: pass a file path, a PIL image or a numpy array")
    _check_size(pil, name)
    return pil


def expand_folders(sources: Sequence[str | Path]) -> list[Path]:
    """Paths of image files: a folder stands for the image files in it (by their extension, sorted by name, not
    recursive); a file is taken as given (refused when read if it is no image). A missing path or one that is
    neither a folder nor a regular file raises :class:`DataError` now, before any model is loaded."""
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    out: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in extensions and p.is_file())
            if not found:
                raise DataError(f"the folder {str(path)!r} holds no image files (PNG, JPEG, ...)")
            out.extend(found)
        elif not path.is_file():
            raise DataError(f"image {str(path)!r} " + ("does not exist" if not path.exists() else
                                                       "is not a regular file (a FIFO or a device): pass image files"))
        else:
            out.append(path)
    return out


def image_batch(model: nn.Module, images: Sequence[ImageInput], names: Sequence[str]) -> torch.Tensor:
    """``images`` preprocessed for ``model`` (its evaluation transform, its channels) as one batch ``(B, C, H, W)``."""
    transform = make_transform(model, train=False)
    channels = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3,))[0]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels, "RGB")
    return torch.stack([transform(to_8bit(read_image(image, name)).convert(mode))
                        for image, name in zip(images, names, strict=True)])
