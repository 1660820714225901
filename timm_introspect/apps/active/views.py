"""What a query strategy sees of the current model: f itself, or H on f's introspective features.

Both views run f once per image (:func:`backbone_outputs`: its logits z and the classifier's input h, in eval
mode) and derive everything a strategy needs from (z, h):

============  ===========================================  ===========================================
              ``via="f"`` (:class:`FView`)                  ``via="H"`` (:class:`HView`)
============  ===========================================  ===========================================
logits        z                                            H(scaled r_x), r_x = loss_delta(z) h^T
MC dropout    timm's ``drop_rate``: dropout on the pooled  the dropout modules of H's MLP
              features right before f's classifier          (:class:`~timm_introspect.IntrospectiveMLP`
              (``F.dropout`` in ``ResNet.forward_head``),  ``drop_rate``), switched on alone while
              sampled on h while f stays in eval mode      every other module stays in eval mode
BADGE         r_x of CE(z, argmax z) for f's classifier    the same for H's last linear layer, whose
              weight (pooled features h)                   input is H's last hidden activation
============  ===========================================  ===========================================

f must end in one ``nn.Linear`` classifier (timm's ResNets, ViTs, ConvNeXts, ... all do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.classifier import find_classifiers
from ...errors import InvalidArgumentError, UnsupportedClassifierError
from ...jobs.robustness import normalized_batches
from ...model.head import IntrospectiveHead
from .badge import gradient_embeddings

__all__ = ["DROPOUT_TYPES", "FView", "HView", "QueryView", "backbone_outputs", "introspective_inputs",
           "make_view", "mc_dropout", "raw_introspective_features"]

#: the dropout modules :func:`mc_dropout` switches on
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _linear_classifier(model: nn.Module) -> nn.Linear:
    layers = find_classifiers(model)
    if len(layers) != 1 or layers[0].kind != "linear" or not hasattr(model, "forward_head"):
        raise UnsupportedClassifierError(
            f"active learning reads f's logits and its classifier's input from forward_head(pre_logits=True); "
            f"{type(model).__name__} has {len(layers)} classifier(s) of kind {[c.kind for c in layers]}: use a timm "
            "model that ends in one nn.Linear (e.g. resnet18_cifar)")
    return layers[0].module


@torch.no_grad()
def backbone_outputs(model: nn.Module, images: np.ndarray, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """f's logits ``(n, N)`` and its classifier's input h ``(n, d)`` (float32, on f's device), f in eval mode.

    ``images``: uint8 ``(n, H, W, 3)`` at f's input size, normalized with f's mean and std.
    """
    classifier = _linear_classifier(model)
    device = next(model.parameters()).device
    model.eval()
    zs, hs = [], []
    for x in normalized_batches(model, images, batch_size):
        h = model.forward_head(model.forward_features(x.to(device)), pre_logits=True)
        zs.append(classifier(h).float())
        hs.append(h.float())
    if not zs:
        raise InvalidArgumentError("no images given: pass at least one")
    return torch.cat(zs), torch.cat(hs)


def raw_introspective_features(head: IntrospectiveHead, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """r_x = dJ/dz h^T for the head's loss and target, flattened ``(n, N * d)``, from f's (z, h); unscaled.

    The head's introspective pass from f's outputs (:meth:`IntrospectiveHead.introspect_outputs`).
    """
    return head.introspect_outputs(logits, features).flat()


def introspective_inputs(head: IntrospectiveHead, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """What H reads for f's logits z and pooled features h: the scaled, flattened r_x ``(n, N * d)``.

    The same numbers as ``head(x).features``, from (z, h).
    """
    return head.net_inputs(head.introspect_outputs(logits, features))


@contextlib.contextmanager
def mc_dropout(module: nn.Module) -> Iterator[list[nn.Module]]:
    """Monte Carlo dropout: the module in eval mode except its dropout modules, which sample; restored after.

    Raises:
        InvalidArgumentError: the module has no dropout (with p > 0) to sample.
    """
    drops = [m for m in module.modules() if isinstance(m, DROPOUT_TYPES) and m.p > 0]
    if not drops:
        raise InvalidArgumentError(
            f"{type(module).__name__} has no dropout to sample for Monte Carlo dropout (BALD): build H with dropout, "
            "e.g. IntrospectiveMLP(..., drop_rate=0.3)")
    modes = {m: m.training for m in module.modules()}
    module.eval()
    for m in drops:
        m.train()
    try:
        yield drops
    finally:
        for m, mode in modes.items():
            m.training = mode


class QueryView:
    """The current model as a strategy sees it: logits, Monte Carlo dropout logits, gradient embeddings.

    Args:
        head: f with its fitted H (:class:`~timm_introspect.IntrospectiveHead`); for ``via="f"`` only f is read.
        batch_size: images per forward pass of f.
    """

    via: str = ""

    def __init__(self, head: IntrospectiveHead, batch_size: int = 500) -> None:
        self.head = head
        self.batch_size = batch_size
        self.classifier = _linear_classifier(head.model)

    def outputs(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """f's ``(z, h)`` for uint8 images ``(n, H, W, 3)``."""
        return backbone_outputs(self.head.model, images, self.batch_size)

    def logits(self, images: np.ndarray) -> torch.Tensor:
        """``(n, N)`` logits of the model queried."""
        raise NotImplementedError

    def mc_logits(self, images: np.ndarray, passes: int) -> torch.Tensor:
        """``(passes, n, N)``: logits under ``passes`` independent dropout masks."""
        raise NotImplementedError

    def embeddings(self, images: np.ndarray) -> torch.Tensor:
        """``(n, D)`` BADGE gradient embeddings w.r.t. the queried model's last linear layer."""
        raise NotImplementedError


class FView(QueryView):
    """Query through f (the feed-forward network)."""

    via = "f"

    def logits(self, images: np.ndarray) -> torch.Tensor:
        return self.outputs(images)[0]

    @torch.no_grad()
    def mc_logits(self, images: np.ndarray, passes: int) -> torch.Tensor:
        rate = float(getattr(self.head.model, "drop_rate", 0.0) or 0.0)
        if rate <= 0:
            raise InvalidArgumentError(
                "BALD through f needs dropout before f's classifier: train f with timm's drop_rate > 0 "
                "(e.g. timm.create_model(..., drop_rate=0.3), or ActiveConfig(drop_rate=0.3))")
        _, h = self.outputs(images)
        return torch.stack([self.classifier(F.dropout(h, rate, training=True)).float() for _ in range(passes)])

    def embeddings(self, images: np.ndarray) -> torch.Tensor:
        return gradient_embeddings(*self.outputs(images))


class HView(QueryView):
    """Query through H (the introspective network on f's r_x)."""

    via = "H"

    def __init__(self, head: IntrospectiveHead, batch_size: int = 500) -> None:
        super().__init__(head, batch_size)
        if head.takes_factors:
            raise InvalidArgumentError("querying through H reads materialized r_x: use an IntrospectiveMLP H "
                                       "(net='mlp'), not an H on factors")

    def inputs(self, images: np.ndarray) -> torch.Tensor:
        return introspective_inputs(self.head, *self.outputs(images))

    @torch.no_grad()
    def logits(self, images: np.ndarray) -> torch.Tensor:
        self.head.introspective_net.eval()
        return self.head.introspective_net(self.inputs(images)).float()

    @torch.no_grad()
    def mc_logits(self, images: np.ndarray, passes: int) -> torch.Tensor:
        x = self.inputs(images)
        net = self.head.introspective_net
        with mc_dropout(net):
            return torch.stack([net(x).float() for _ in range(passes)])

    @torch.no_grad()
    def embeddings(self, images: np.ndarray) -> torch.Tensor:
        net = self.head.introspective_net
        if not (isinstance(net, nn.Sequential) and isinstance(net[-1], nn.Linear)):
            raise UnsupportedClassifierError(
                f"BADGE through H needs an H that ends in nn.Linear (IntrospectiveMLP); got {type(net).__name__}")
        net.eval()
        hidden = self.inputs(images)
        for layer in list(net)[:-1]:  # H up to its last linear layer: that layer's input
            hidden = layer(hidden)
        return gradient_embeddings(net[-1](hidden).float(), hidden.float())


def make_view(head: IntrospectiveHead, via: str = "f", batch_size: int = 500) -> QueryView:
    """:class:`FView` (``via="f"``) or :class:`HView` (``via="H"``)."""
    views = {"f": FView, "H": HView}
    if via not in views:
        raise InvalidArgumentError(f"via must be 'f' (query through f) or 'H' (through H); got {via!r}")
    return views[via](head, batch_size)
