"""H, the introspective network: the paper's MLP over flattened introspective features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from .registry import register_net

__all__ = ["IntrospectiveMLP", "mlp_layers", "resolve_act"]


def resolve_act(act_layer: type[nn.Module] | str) -> type[nn.Module]:
    """An activation class, or its name in ``torch.nn`` (``"Sigmoid"``)."""
    return getattr(nn, act_layer) if isinstance(act_layer, str) else act_layer


def mlp_layers(widths: Sequence[int], act_layer: type[nn.Module], drop_rate: float = 0.0) -> list[nn.Module]:
    """Linear layers between consecutive widths, with an activation (and dropout, if any) between them."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i:
            layers.append(act_layer())
            if drop_rate:
                layers.append(nn.Dropout(drop_rate))
        layers.append(nn.Linear(w_in, w_out))
    return layers


@register_net("mlp")
class IntrospectiveMLP(nn.Sequential):
    """MLP with sigmoid between layers: ``F -> 300 -> 100 -> N`` by default (paper, Table 3).

    Args:
        in_features: size of the flat introspective features (``N * d`` for one linear classifier).
        num_classes: N, the number of classes of f.
        hidden: widths of the hidden layers.
        act_layer: activation between layers (a class or its name in ``torch.nn``).
        drop_rate: dropout after each hidden activation (timm's name; the paper uses none).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (300, 100),
        act_layer: type[nn.Module] | str = nn.Sigmoid,
        drop_rate: float = 0.0,
    ) -> None:
        act = resolve_act(act_layer)
        super().__init__(*mlp_layers([in_features, *hidden, num_classes], act, drop_rate))
        self.drop_rate = drop_rate
        self.in_features = in_features
        self.num_classes = num_classes
        self.hidden = tuple(hidden)
        self.act_layer = act

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-ready (saved in ``introspection_config.json``)."""
        cfg = {"in_features": self.in_features, "num_classes": self.num_classes, "hidden": list(self.hidden),
               "act_layer": self.act_layer.__name__}
        return {**cfg, "drop_rate": self.drop_rate} if self.drop_rate else cfg

    def describe(self) -> str:
        widths = [self.in_features, *self.hidden, self.num_classes]
        dropout = f", dropout {self.drop_rate:g}" if self.drop_rate else ""
        return f"MLP {' → '.join(map(str, widths))}, {self.act_layer.__name__} activations{dropout}"
