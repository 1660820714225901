"""The registry of introspective networks H, in the style of timm's model registry.

Register a class with :func:`register_net`; it is then available by name everywhere: in
:meth:`IntrospectiveHead.wrap(model, introspective_net="name") <timm_introspect.IntrospectiveHead.wrap>`,
in the ``fit --net`` option of the CLI, and when a saved model is loaded (its
``introspection_config.json`` stores the name and :meth:`config`)::

    @register_net("tiny")
    class TinyH(nn.Sequential):
        def __init__(self, in_features: int, num_classes: int, width: int = 16):
            super().__init__(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, num_classes))
            self.in_features, self.num_classes, self.width = in_features, num_classes, width

        def config(self):
            return {"in_features": self.in_features, "num_classes": self.num_classes, "width": self.width}

What a registered class provides:

* ``config() -> dict``: its constructor arguments, JSON-ready (required: a saved model is rebuilt as
  ``cls(**config)``);
* ``from_shapes(shapes, num_classes, **kwargs)`` (classmethod, optional): build it for a head whose
  classifier weights have ``shapes`` (e.g. ``[(10, 512)]``); without it the class is called as
  ``cls(in_features=sum of the shapes' sizes, num_classes=N, **kwargs)``, the input of a net over the
  flattened r_x;
* ``describe() -> str`` (optional): one line for the model card;
* ``takes_factors = True`` (optional): it reads r_x in factored form ``{layer: (delta, h)}``
  (:mod:`timm_introspect.nets.lowrank`) instead of the flattened ``(B, F)`` features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import nn

from ..errors import InvalidArgumentError, UnknownNetError

__all__ = ["create_net", "describe_net", "get_net_class", "is_net", "list_nets", "net_config", "register_net"]

_NETS: dict[str, type[nn.Module]] = {}
N = TypeVar("N", bound=type[nn.Module])


def register_net(name: str) -> Callable[[N], N]:
    """Class decorator: register an H under ``name`` (lower-case, as the CLI's ``--net`` takes it)."""

    def wrap(cls: N) -> N:
        if not callable(getattr(cls, "config", None)):
            raise InvalidArgumentError(f"{cls.__name__} needs a config() method returning its constructor arguments "
                            "(a saved model is rebuilt from them)")
        if name in _NETS and _NETS[name] is not cls:
            raise InvalidArgumentError(f"an H named {name!r} is already registered ({_NETS[name].__name__})")
        _NETS[name] = cls
        cls.net_name = name
        return cls

    return wrap


def list_nets() -> list[str]:
    """The registered names, sorted."""
    return sorted(_NETS)


def is_net(name: str) -> bool:
    return name in _NETS


def get_net_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; also accepts a class name (the format saved before names existed)."""
    if name in _NETS:
        return _NETS[name]
    for cls in _NETS.values():
        if cls.__name__ == name:
            return cls
    raise UnknownNetError(f"no H is registered as {name!r}; registered: {', '.join(list_nets())}. "
                          "Register one with @timm_introspect.register_net(name), and import it before loading")


def create_net(
    name: str,
    shapes: Sequence[Sequence[int]] | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered H.

    Args:
        name: a name from :func:`list_nets`.
        shapes: the classifier weight shapes of the head it serves (``[(N, d)]``, or ``(N, d, 1, 1)`` for a
            1x1 conv); with them the net is sized for that head. Without them, ``kwargs`` are its full
            constructor arguments (as saved by ``config()``).
        num_classes: N, the number of classes it predicts.
        kwargs: further constructor arguments (``hidden=(300, 100)``, ``rank=64``, ...).
    """
    cls = get_net_class(name)
    if shapes is None:
        return cls(**kwargs) if num_classes is None else cls(num_classes=num_classes, **kwargs)
    shapes = [tuple(int(s) for s in shape) for shape in shapes]
    if num_classes is None:
        num_classes = shapes[0][0]
    if hasattr(cls, "from_shapes"):
        return cls.from_shapes(shapes, num_classes, **kwargs)
    return cls(in_features=sum(math.prod(s) for s in shapes), num_classes=num_classes, **kwargs)


def net_config(net: nn.Module) -> dict[str, Any]:
    """What ``introspection_config.json`` stores about H: its registered ``name`` and ``config()``.

    A net that is not registered is saved as ``{"type": class name}``: its weights load only into an
    instance the caller passes to ``from_pretrained``.
    """
    name = getattr(type(net), "net_name", None)
    if name is None or _NETS.get(name) is not type(net):
        return {"type": type(net).__name__}
    return {"name": name, **net.config()}


def describe_net(net: nn.Module) -> str:
    """One line about H for the model card: its ``describe()``, or its name and arguments."""
    if callable(getattr(net, "describe", None)):
        return str(net.describe())
    cfg = net_config(net)
    if "name" not in cfg:
        return f"a custom {cfg['type']}"
    args = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "name")
    return f"{type(net).__name__} ({args})"
