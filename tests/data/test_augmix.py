"""AugMix copies for the augmented H: seeded, shape-preserving, and made only of the listed operations."""

import numpy as np
import pytest

from timm_introspect.data.augmix import AUGMIX_OPS, augmix_images
from timm_introspect.errors import InvalidArgumentError


def test_augmix_is_seeded_and_changes_the_images():
    x = (np.random.default_rng(0).random((20, 32, 32, 3)) * 255).astype(np.uint8)
    a, b, c = augmix_images(x, 0, progress=False), augmix_images(x, 0, progress=False), augmix_images(x, 1,
                                                                                                      progress=False)
    assert a.shape == x.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (a != x).mean() > 0.3


def test_no_cifar10c_family_among_the_operations():
    """timm's AugMix default adds Contrast, Brightness (CIFAR-10-C families), Color and Sharpness: left out."""
    from timm.data.auto_augment import NAME_TO_OP

    assert set(AUGMIX_OPS) <= set(NAME_TO_OP)
    left_out = {"Contrast", "ContrastIncreasing", "Brightness", "BrightnessIncreasing", "Color", "ColorIncreasing",
                "Sharpness", "SharpnessIncreasing"}
    assert not left_out & set(AUGMIX_OPS)
    with pytest.raises(InvalidArgumentError, match="uint8 RGB"):
        augmix_images(np.zeros((2, 8, 8), np.uint8))
