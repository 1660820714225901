"""An uploaded file read as an RGB image, or a :class:`~timm_introspect.errors.DataError` that says why not.

Anything a user can upload is refused by name rather than with a stack trace: a file that is no image, an image
too large to decode safely (a decompression bomb: a few kilobytes that decode to gigabytes), an empty upload.
Grayscale, palette, 16-bit and RGBA images are converted to RGB (RGBA: the alpha channel is dropped, as
:func:`~timm_introspect.data.decode.decode_image` does for a dataset's images).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ...data.decode import to_8bit
from ...errors import DataError

__all__ = ["MAX_PIXELS", "MAX_UPLOAD", "read_upload"]

#: the largest image the demo decodes (width x height), checked on the header before any pixel is decoded
MAX_PIXELS = 40_000_000
#: the largest upload the demo's server accepts (Gradio's ``max_file_size``)
MAX_UPLOAD = "25mb"


def read_upload(path: str | Path, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image file at ``path`` as an RGB PIL image.

    Args:
        name: how to call the file in messages (the name it was uploaded with; default: its file name).
        max_pixels: refuse images with more pixels than this (checked before decoding).

    Raises:
        DataError: not a regular file, not an image, over ``max_pixels``, or damaged.
    """
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise DataError(f"{name!r} is not a file: upload an image (PNG, JPEG, ...)")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DataError(f"{name!r} is {width}x{height} px ({width * height / 1e6:.0f} megapixels), more than "
                                f"the demo decodes ({max_pixels / 1e6:.0f} megapixels): it may be a decompression "
                                "bomb; upload a smaller image")
            image.load()
            return to_8bit(image).convert("RGB")
    except DataError:
        raise
    except Image.DecompressionBombError as err:
        raise DataError(f"{name!r} is too large to decode safely: it may be a decompression bomb; upload a smaller "
                        "image") from err
    except UnidentifiedImageError as err:
        raise DataError(f"{name!r} is not an image this demo can read: upload a PNG, JPEG, WebP, GIF or BMP "
                        "file") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{name!r} could not be decoded ({err}): it may be truncated or damaged; upload another "
                        "image") from err
