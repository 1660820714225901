"""CIFAR-10-C: the 19 corruptions of Hendrycks & Dietterich's generator, and the release's layout.

* :mod:`.corruptions`: :func:`corrupt` images as the original CIFAR generator does (seeded, vectorized).
* :mod:`.release`: :func:`write_official` the ``.npy`` layout, and read it back from a folder, the
  Zenodo tar, a ``datasets`` table of rows, or a Hub mirror with :func:`load_cifar10c`.
* :mod:`.imagenet`: ImageNet-C, the same corruptions with the ImageNet generator's parameters
  (``corrupt(..., dataset="imagenet")``): :func:`imagenet_preprocess`, :func:`write_imagenet_c` its
  layout of JPEG files, :func:`load_imagenet_c` from a folder, rows or the Hub.
"""

from ...errors import MissingDependencyError

try:  # the optional extra: the original generator's scientific stack
    import cv2  # noqa: F401
    import scipy  # noqa: F401
    import skimage  # noqa: F401
except ImportError as err:
    raise MissingDependencyError(
        f"CIFAR-10-C needs scipy, scikit-image and OpenCV ({err}): pip install 'timm-introspect[cifar10c]'"
    ) from err

from .corruptions import (
    COMMON,
    CORRUPTIONS,
    DATASETS,
    EXTRA,
    FROST_FILES,
    IMAGENET_PARAMS,
    IMAGENET_SIZE,
    PARAMS,
    TABLE,
    Corruption,
    corrupt,
)
from .imagenet import imagenet_preprocess, write_imagenet_c
from .imagenet_load import load_imagenet_c
from .release import RELEASE_TAR, load_cifar10c, load_official, write_official

__all__ = ["COMMON", "CORRUPTIONS", "DATASETS", "EXTRA", "FROST_FILES", "IMAGENET_PARAMS", "IMAGENET_SIZE", "PARAMS",
           "RELEASE_TAR", "TABLE", "Corruption", "corrupt", "imagenet_preprocess", "load_cifar10c",
           "load_imagenet_c", "load_official", "write_imagenet_c", "write_official"]
