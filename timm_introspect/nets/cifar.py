"""CIFAR ResNets as registered timm architectures: ``timm.create_model("resnet18_cifar")``.

ImageNet stems (a 7x7 stride-2 conv and a max-pool) shrink a 32 px image 4x before the first block,
which costs CIFAR accuracy; the CIFAR ResNets of the paper use a 3x3 stride-1 first conv and no
max-pool instead (a deep stem keeps its convs, its first one with stride 1). Importing
timm_introspect registers ``<name>_cifar`` for the ResNets below, each with a pretrained config for
32 px input, so that a saved model names its real architecture: ``timm.create_model("hf-hub:...")``
rebuilds the right stem when timm_introspect is imported, and fails loudly (unknown architecture)
when it is not, instead of building an ImageNet stem.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..errors import InvalidArgumentError

__all__ = ["CIFAR_ARCHS", "CifarResNet", "cifar_architecture", "create_model", "use_cifar_stem"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: timm's arguments of each ImageNet ResNet that gets a ``<name>_cifar`` twin (plus the CPU recipe's).
_ARCH_ARGS: dict[str, dict[str, Any]] = {
    "test_resnet": dict(block=[BasicBlock, BasicBlock, Bottleneck, BasicBlock], layers=(1, 1, 1, 1), stem_width=16,
                        stem_type="deep", avg_down=True, channels=(32, 48, 48, 96)),
    "resnet10t": dict(block=BasicBlock, layers=(1, 1, 1, 1), stem_width=32, stem_type="deep_tiered", avg_down=True),
    "resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
    "resnet18d": dict(block=BasicBlock, layers=(2, 2, 2, 2), stem_width=32, stem_type="deep", avg_down=True),
    "resnet34": dict(block=BasicBlock, layers=(3, 4, 6, 3)),
    "resnet34d": dict(block=BasicBlock, layers=(3, 4, 6, 3), stem_width=32, stem_type="deep", avg_down=True),
    "resnet50": dict(block=Bottleneck, layers=(3, 4, 6, 3)),
    "resnet50d": dict(block=Bottleneck, layers=(3, 4, 6, 3), stem_width=32, stem_type="deep", avg_down=True),
    # the CPU recipe's backbone (README, "CPU recipe"): a narrow ResNet-10 with a deep stem whose first conv
    # keeps stride 2 (stages at 16, 8, 4, 2 px), trained in minutes on two cores
    "resnet10s": dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=16,
                      stem_type="deep", stem_stride=2),
}


def use_cifar_stem(model: nn.Module, stride: int = 1) -> nn.Module:
    """Give a timm ResNet-style model the CIFAR stem in place: a 3x3 stride-1 first conv and no max-pool.

    (A deep stem keeps its convs; its first conv gets stride 1, or ``stride``.) Prefer the registered
    ``<name>_cifar`` architectures, which save and load by name; this function is what they apply,
    and what loads models saved before they existed.

    Raises:
        InvalidArgumentError: the model has no ``conv1`` / ``maxpool`` pair to replace.
    """
    conv1 = getattr(model, "conv1", None)
    first = conv1[0] if isinstance(conv1, nn.Sequential) and len(conv1) else conv1
    if not isinstance(first, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise InvalidArgumentError(
            f"{type(model).__name__} has no ResNet-style stem (conv1 + maxpool) to replace; use a timm "
            "ResNet (e.g. resnet18) for the CIFAR stem, or pass 32 px images to the model as it is"
        )
    if isinstance(conv1, nn.Sequential):  # a deep stem: its first conv gets stride 1
        first.stride = (stride, stride)
    else:
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, stride=stride, padding=1, bias=False)
    model.maxpool = nn.Identity()
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        pool = (4 // stride,) * 2
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (first.in_channels, 32, 32), "pool_size": pool}
    return model


class CifarResNet(ResNet):
    """timm's :class:`~timm.models.resnet.ResNet` with the CIFAR stem (see :func:`use_cifar_stem`)."""

    def __init__(self, stem_stride: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        use_cifar_stem(self, stem_stride)


def _cfg(deep_stem: bool, stem_stride: int = 1) -> dict[str, Any]:
    pool = (4 // stem_stride,) * 2
    return dict(num_classes=10, input_size=(3, 32, 32), pool_size=pool, crop_pct=1.0, interpolation="bilinear",
                mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv="conv1.0" if deep_stem else "conv1", classifier="fc")


default_cfgs = generate_default_cfgs({
    f"{name}_cifar": _cfg(str(args.get("stem_type", "")).startswith("deep"), args.get("stem_stride", 1))
    for name, args in _ARCH_ARGS.items()
})


def _entrypoint(base: str):
    arch = f"{base}_cifar"

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
        return build_model_with_cfg(CifarResNet, arch, pretrained, **dict(_ARCH_ARGS[base], **kwargs))

    entrypoint.__name__ = entrypoint.__qualname__ = arch
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"timm's {base} with the CIFAR stem (3x3 stride-1 first conv, no max-pool), for 32 px input."
    return register_model(entrypoint)


#: The registered CIFAR architectures.
CIFAR_ARCHS: tuple[str, ...] = tuple(_entrypoint(base).__name__ for base in _ARCH_ARGS)


def cifar_architecture(name: str) -> str:
    """The registered CIFAR twin of a timm architecture (``"resnet18"`` -> ``"resnet18_cifar"``)."""
    if name in CIFAR_ARCHS:
        return name
    if f"{name}_cifar" in CIFAR_ARCHS:
        return f"{name}_cifar"
    raise InvalidArgumentError(f"no CIFAR-stem version of {name!r} is registered; choose from {', '.join(CIFAR_ARCHS)}")


def create_model(name: str, num_classes: int, cifar_stem: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, num_classes=...)``; ``cifar_stem=True`` picks the ``<name>_cifar`` twin."""
    return timm.create_model(cifar_architecture(name) if cifar_stem else name, num_classes=num_classes, **kwargs)
