"""Finding a timm model's final classifier layer(s) through timm's own protocol.

timm names the classifier in ``pretrained_cfg["classifier"]`` (a module path, or a tuple of paths for
models with two heads such as ``deit_*_distilled``) and returns it from ``get_classifier()``. The
layer we introspect is the one holding the classifier weight ``W``: for containers such as LeViT's
``NormLinear`` that is the inner linear layer the ``pretrained_cfg`` name points to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import timm.layers
from torch import nn

from ..errors import NoClassifierError

__all__ = ["ClassifierLayer", "find_classifiers"]

Kind = Literal["linear", "conv1x1", "functional"]

_LINEAR_FORWARDS = {nn.Linear.forward, timm.layers.Linear.forward}


@dataclass(frozen=True)
class ClassifierLayer:
    """One classifier layer of a model: its module path, the module, and how r_x is computed.

    ``kind`` is ``"linear"`` or ``"conv1x1"`` for the closed-form outer product and ``"functional"``
    for the ``torch.func`` fallback.
    """

    name: str
    module: nn.Module
    kind: Kind

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight


def _kind(module: nn.Module) -> Kind:
    if isinstance(module, nn.Linear) and type(module).forward in _LINEAR_FORWARDS:
        return "linear"
    if (
        type(module) is nn.Conv2d
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.padding in ((0, 0), "valid")
        and module.groups == 1
    ):
        return "conv1x1"
    return "functional"


def _has_weight(module: nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), nn.Parameter)


def _no_classifier(model: nn.Module, why: str, todo: str | None = None) -> NoClassifierError:
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
    todo = todo or (
        f"build the model with timm.create_model({arch!r}, num_classes=N) (or call model.reset_classifier(N)) "
        "and train its classifier before wrapping it; an encoder that takes no num_classes needs a classification "
        "architecture instead"
    )
    return NoClassifierError(f"{arch}: {why}. Introspection needs a trained classifier: {todo}.")


def find_classifiers(model: nn.Module) -> list[ClassifierLayer]:
    """The layer(s) holding the final classifier weight of a timm model, in timm's order.

    Raises:
        NoClassifierError: the model was built with ``num_classes=0``, or it exposes no classifier
            through ``get_classifier()`` / ``pretrained_cfg["classifier"]``.
    """
    if not hasattr(model, "get_classifier") and not (getattr(model, "pretrained_cfg", None) or {}).get("classifier"):
        raise _no_classifier(
            model,
            f"{type(model).__name__} is an encoder without a classifier (no get_classifier(), no "
            "pretrained_cfg['classifier'])",
            "use a timm classification architecture, or a model whose get_classifier() returns the final "
            "nn.Linear over this encoder's features",
        )
    if getattr(model, "num_classes", None) == 0:
        raise _no_classifier(
            model, "the model has num_classes=0: it was built without a classifier, or it is an encoder that has none"
        )
    names_by_module = {id(m): name for name, m in model.named_modules()}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cfg_names = cfg.get("classifier") or ()
    cfg_names = (cfg_names,) if isinstance(cfg_names, str) else tuple(cfg_names)
    cfg_modules = {}
    for name in cfg_names:
        try:
            cfg_modules[name] = model.get_submodule(name)
        except AttributeError:
            pass

    if hasattr(model, "get_classifier"):
        heads = model.get_classifier()
        heads = tuple(heads) if isinstance(heads, (tuple, list)) else (heads,)
    else:
        heads = tuple(cfg_modules.values())
    if not heads:
        raise _no_classifier(model, "it has no get_classifier() and no pretrained_cfg['classifier'] layer")

    layers = []
    for head in heads:
        if head is None or isinstance(head, nn.Identity) or not any(True for _ in head.parameters()):
            raise _no_classifier(model, f"its classifier is {type(head).__name__} (no weights)")
        if not _has_weight(head):
            # a container (e.g. NormLinear): the pretrained_cfg names the layer inside it, else take
            # the last layer with a weight.
            inner = [m for m in cfg_modules.values() if _has_weight(m) and any(m is sub for sub in head.modules())]
            inner = inner or [m for m in head.modules() if _has_weight(m)]
            if not inner:
                raise _no_classifier(model, f"its classifier {type(head).__name__} holds no weight")
            head = inner[-1]
        layers.append(ClassifierLayer(names_by_module.get(id(head), "?"), head, _kind(head)))
    return layers
