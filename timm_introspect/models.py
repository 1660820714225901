"""Building f: timm models, with a CIFAR stem for 32 px inputs."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

__all__ = ["create_model", "use_cifar_stem"]


def use_cifar_stem(model: nn.Module) -> nn.Module:
    """Give a timm ResNet-style model the CIFAR stem: a 3x3 stride-1 first conv and no max-pool.

    (A deep stem keeps its convs; its first conv gets stride 1.)

    ImageNet stems (7x7 stride 2 + max-pool) shrink a 32 px image 4x before the first block, which
    costs CIFAR accuracy; the CIFAR ResNets of the paper use this stem instead.

    Raises:
        ValueError: the model has no ``conv1`` / ``maxpool`` pair to replace.
    """
    conv1 = getattr(model, "conv1", None)
    first = conv1[0] if isinstance(conv1, nn.Sequential) and len(conv1) else conv1
    if not isinstance(first, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ValueError(
            f"{type(model).__name__} has no ResNet-style stem (conv1 + maxpool) to replace; use a timm "
            "ResNet (e.g. resnet18) for the CIFAR stem, or pass 32 px images to the model as it is"
        )
    if isinstance(conv1, nn.Sequential):  # a deep stem (resnet*d, test_resnet): its first conv gets stride 1
        first.stride = (1, 1)
    else:
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (first.in_channels, 32, 32), "pool_size": (4, 4)}
    model.cifar_stem = True  # recorded by save_pretrained, re-applied by from_pretrained
    return model


def create_model(name: str, num_classes: int, cifar_stem: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, num_classes=...)``, optionally with :func:`use_cifar_stem`."""
    model = timm.create_model(name, num_classes=num_classes, **kwargs)
    return use_cifar_stem(model) if cifar_stem else model
