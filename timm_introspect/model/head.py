"""IntrospectiveHead: r_x from one forward pass of a timm classifier, and H on top of it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.classifier import ClassifierLayer, find_classifiers
from ..core.features import Factors, _promote, weight_grad
from ..core.introspect import output_grads, run_with_hooks
from ..core.losses import loss_delta, parse_loss
from ..core.scaling import SCALINGS, FactorScaler, FeatureScaler, StandardScaler
from ..core.stats import MaxLogitMean
from ..data.images import batch_images
from ..errors import InputShapeError, NotFittedError, UnsupportedClassifierError
from ..io.hub_mixin import IntrospectiveHubMixin
from ..nets.mlp import IntrospectiveMLP
from ..nets.registry import create_net

__all__ = ["IntrospectiveHead", "IntrospectiveOutput", "layer_factors"]


def layer_factors(layer: ClassifierLayer, calls: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """r_x of one linear / 1x1-conv classifier layer in factored form, from its calls' ``(h, dJ/d(output))``.

    Returns ``(delta (B, S, N), h (B, S, d))`` over the S positions of all calls (zeros when the layer was not
    called on ``x``).
    """
    deltas, hs = [], []
    for h, g in calls:
        if layer.kind == "conv1x1":  # positions are the spatial ones: (B, C, H, W) -> (B, HW, C)
            g, h = g.flatten(2).transpose(1, 2), h.flatten(2).transpose(1, 2)
        g, h = _promote(g, h)
        deltas.append(g.reshape(g.shape[0], -1, g.shape[-1]))
        hs.append(h.reshape(h.shape[0], -1, h.shape[-1]))
    if not deltas:
        n, d = layer.weight.shape[:2]
        deltas, hs = [x.new_zeros(x.shape[0], 1, n)], [x.new_zeros(x.shape[0], 1, d)]
    return torch.cat(deltas, 1), torch.cat(hs, 1)

@dataclass
class IntrospectiveOutput:
    """What :class:`IntrospectiveHead` returns.

    Attributes:
        logits: ``(B, N)`` H's prediction from the introspective features.
        base_logits: ``(B, N)`` f's logits, bit-identical to calling the wrapped model.
        features: ``(B, F)`` the scaled, flattened introspective features H saw (``None`` for an H
            that reads them in factored form and never materializes them).
    """

    logits: torch.Tensor
    base_logits: torch.Tensor
    features: torch.Tensor | None = None


class IntrospectiveHead(nn.Module, IntrospectiveHubMixin):
    """A trained timm classifier f, its introspective features r_x, and the network H over them.

    For an image x, f gives logits z = W h + b. The introspective features are the gradient of
    J(c * 1_N, z) w.r.t. the classifier weight W, per sample (paper, Eq. 2-6). They come from a
    single forward pass of f: hooks capture the classifier's input h and output, the loss derivative
    is closed-form, and the weight gradient is an outer product (a ``torch.func`` VJP for unusual
    classifier layers). f is frozen and kept in eval mode; its logits are not changed.

    Create it with :meth:`wrap`; call :meth:`fit` on training data to estimate the target ``M``
    (for the "-M" losses) and the [-1, 1] feature scale; then train H (``head.introspective_net``)
    on ``head(x).features``, or call ``head(x).logits``.

    Share it like a timm model: :meth:`save_pretrained`, :meth:`push_to_hub` and
    :meth:`from_pretrained` (:class:`~timm_introspect.io.hub_mixin.IntrospectiveHubMixin`); the backbone stays
    loadable by timm (see :mod:`timm_introspect.io.hub`).

    Args:
        model: a timm classifier (``timm.create_model(name, num_classes=N)``), trained. It is
            frozen and put in eval mode.
        loss: introspection loss, one of :data:`timm_introspect.LOSSES`; the paper's ``"mse-M"``
            style names set ``target="M"``.
        target: the constant c of the target ``c * 1_N``, or ``"M"`` for the mean maximum logit
            over the training set (estimated by :meth:`fit`).
        introspective_net: H: a module, or the name of a registered one (:func:`timm_introspect.list_nets`,
            e.g. ``"factorized"``) sized for this model; by default :class:`IntrospectiveMLP`.
        hidden: hidden widths of the default H.
        scale: how :meth:`fit` scales the features before H: ``"maxabs"`` (or ``True``, the paper's) divides
            every dimension by its largest absolute value on the training data and clamps to [-1, 1]
            (:class:`FeatureScaler`; :class:`FactorScaler` for an H on factors), ``"standard"`` standardizes
            every dimension (:class:`StandardScaler`, materialized features only), ``"none"`` (or ``False``)
            passes raw r_x.
        label_names: class names (default: the model's ``pretrained_cfg["label_names"]``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str = "mse",
        target: float | str = 1.0,
        introspective_net: nn.Module | str | None = None,
        hidden: Sequence[int] = (300, 100),
        scale: bool | str = True,
        label_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        loss, suffix_target = parse_loss(loss)
        if suffix_target is not None:
            target = suffix_target
        if isinstance(target, str) and target != "M":
            raise ValueError(f"target must be a number or 'M' (the mean max-logit, fitted by fit()); got {target!r}")

        self.classifiers: list[ClassifierLayer] = find_classifiers(model)
        model.eval().requires_grad_(False)
        self.model = model
        self.loss = loss
        self.target = target
        self.num_classes = int(getattr(model, "num_classes", 0) or self.classifiers[0].weight.shape[0])
        self.feature_shapes = {c.name: tuple(c.weight.shape) for c in self.classifiers}
        self.num_features = sum(math.prod(s) for s in self.feature_shapes.values())
        # target c of the loss: a constant, or NaN until fit() estimates M
        self.register_buffer("target_value", torch.tensor(math.nan if target == "M" else float(target)))
        if introspective_net is None:
            introspective_net = IntrospectiveMLP(self.num_features, self.num_classes, hidden)
        elif isinstance(introspective_net, str):  # a registered name: sized for this model's classifier(s)
            introspective_net = create_net(introspective_net, list(self.feature_shapes.values()), self.num_classes)
        self.introspective_net = introspective_net
        scaling = {True: "maxabs", False: "none"}.get(scale, scale) if isinstance(scale, bool) else scale
        if scaling not in SCALINGS:
            raise ValueError(f"scale must be one of {', '.join(SCALINGS)} (or True / False), got {scale!r}")
        self.scaling: str = scaling
        if scaling == "none":
            self.scaler = nn.Identity()
        elif scaling == "standard":
            if self.takes_factors:
                raise ValueError(
                    "scale='standard' standardizes materialized r_x; an H on factors (delta, h) never sees r_x: use "
                    "scale='maxabs' (each factor scaled to [-1, 1]) or scale='none' with this H")
            self.scaler = StandardScaler(self.num_features)
        elif self.takes_factors:
            self.scaler = FactorScaler({c.name: tuple(c.weight.shape[:2]) for c in self.classifiers})
        else:
            self.scaler = FeatureScaler(self.num_features)
        label_names = label_names or (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
        if label_names is not None and len(label_names) != self.num_classes:
            raise ValueError(f"{len(label_names)} label_names for a model with {self.num_classes} classes")
        self.label_names = list(label_names) if label_names is not None else None
        #: evaluation results for the model card: {split: {"f" | "H" | ...: {metric: value}}}
        self.metrics: dict[str, dict[str, dict[str, float]]] = {}
        #: the dataset f and H were trained on (a Hub id or a name), for the model card
        self.dataset: str | None = None
        #: held-out clean images neither f nor H saw, for temperature scaling (see robustness.calibration_images)
        self.calibration: dict[str, Any] | None = None

    @classmethod
    def wrap(cls, model: nn.Module, **kwargs: Any) -> IntrospectiveHead:
        """Wrap a trained timm classifier; takes the constructor's arguments (see the class docstring)."""
        return cls(model, **kwargs)

    # f stays in eval mode: train() only switches H (and anything else but f).
    def train(self, mode: bool = True) -> IntrospectiveHead:
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.target_value.device

    def _target(self) -> torch.Tensor:
        if self.target == "M" and torch.isnan(self.target_value):
            raise NotFittedError(
                f"loss {self.loss}-M uses the target M (mean max-logit over the training set), which is not "
                "fitted: call head.fit(train_loader) first, or pass a numeric target"
            )
        return self.target_value

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise InputShapeError(f"expected an image tensor of shape (B, C, H, W), got {type(x).__name__}")
        if x.dim() != 4:
            hint = " (add a batch dimension: x.unsqueeze(0))" if x.dim() == 3 else ""
            raise InputShapeError(
                f"expected a batch of images of shape (B, C, H, W) = (B, {', '.join(map(str, self.input_size()))}), "
                f"got a {x.dim()}-d tensor of shape {tuple(x.shape)}{hint}"
            )
        if not x.is_floating_point():
            raise InputShapeError(
                f"got {x.dtype} images: timm models take float images normalized with the model's mean and std; "
                "preprocess with timm.data.create_transform(**timm.data.resolve_model_data_config(model)), or "
                "x.float().div(255) followed by that normalization")
        param = next(self.model.parameters(), None)
        if param is not None and x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(param.dtype)  # float16 / bfloat16 / float64 images for a float32 f (under autocast: as given)
        return x.detach()

    def input_size(self) -> tuple[int, ...]:
        """``(C, H, W)`` from f's pretrained config."""
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        return tuple(cfg.get("input_size", ("C", "H", "W")))

    def _output_grads(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[tuple[torch.Tensor, torch.Tensor]]]]:
        """f's logits, and for each classifier call its input h and dJ/d(output), per sample."""
        x = self._check_input(x)
        target = self._target()
        logits, calls = run_with_hooks(self.model, self.classifiers, x, self.num_classes, self.input_size())
        delta = loss_delta(self.loss, logits.detach().to(torch.promote_types(logits.dtype, torch.float32)), target)
        return logits.detach(), output_grads(logits, calls, delta)

    def _introspect(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, pairs = self._output_grads(x)
        features: dict[str, torch.Tensor] = {}
        for layer in self.classifiers:
            # a layer called several times gets the sum of its calls' gradients
            parts = [weight_grad(layer, h, g) for h, g in pairs[layer.name]]
            if not parts:
                parts = [torch.zeros(x.shape[0], *layer.weight.shape, device=x.device)]
            features[layer.name] = sum(parts[1:], parts[0])
        return logits, features

    def introspective_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, Factors]:
        """f's logits and r_x in factored form, never materialized: per classifier layer ``(delta, h)``.

        ``delta`` is ``(B, S, N)`` and ``h`` is ``(B, S, d)`` over S positions (1 for a pooled linear
        head), with ``r_x = sum_s delta[:, s, :, None] * h[:, s, None, :]`` (flattened: the raw
        features of :meth:`flat_features`). Only for linear and 1x1-conv classifiers.
        """
        logits, pairs = self._output_grads(x)
        factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer in self.classifiers:
            if layer.kind == "functional":
                raise UnsupportedClassifierError(
                    f"classifier {layer.name} ({type(layer.module).__name__}) has no rank-one gradient: use a "
                    "materialized H (IntrospectiveMLP) for this model"
                )
            factors[layer.name] = layer_factors(layer, pairs[layer.name], x)
        return logits, factors

    def introspective_features(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The raw introspective features r_x: per-sample dJ/dW for the classifier weight W.

        Returns:
            ``(B, *W.shape)`` (e.g. ``(B, N, d)``) for a model with one classifier; for a model with
            several (e.g. ``deit_*_distilled``: ``head`` and ``head_dist``), a dict from the layer's
            module path to its ``(B, *W.shape)`` gradient.
        """
        _, features = self._introspect(x)
        if len(features) == 1:
            return next(iter(features.values()))
        return features

    def flat_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f's logits ``(B, N)`` and the raw features flattened and concatenated, ``(B, F)``."""
        logits, features = self._introspect(x)
        return logits, torch.cat([f.flatten(1) for f in features.values()], dim=1)

    @property
    def takes_factors(self) -> bool:
        """Whether H reads r_x in factored form (:mod:`timm_introspect.nets.lowrank`) instead of materialized."""
        return bool(getattr(self.introspective_net, "takes_factors", False))

    def forward(self, x: torch.Tensor) -> IntrospectiveOutput:
        if self.takes_factors:
            base_logits, factors = self.introspective_factors(x)
            return IntrospectiveOutput(logits=self.introspective_net(self.scaler(factors)), base_logits=base_logits)
        base_logits, raw = self.flat_features(x)
        features = self.scaler(raw.to(self.target_value.dtype))
        return IntrospectiveOutput(logits=self.introspective_net(features), base_logits=base_logits, features=features)

    @property
    def scaled(self) -> bool:
        """Whether r_x (or its factors) is scaled before H (:attr:`scaling` says how)."""
        return not isinstance(self.scaler, nn.Identity)

    @torch.no_grad()
    def fit(self, data: Iterable[Any], max_batches: int | None = None, progress: bool = True) -> IntrospectiveHead:
        """Estimate target M (for "-M" losses) and the feature scale (``scale=``) on training data.

        The statistics are those of :mod:`timm_introspect.core.stats` (the training pipeline uses the same):
        exact, independent of batching, and reduced across processes when ``torch.distributed`` is
        initialized and each process passes its own shard.

        Args:
            data: an iterable of batches (tensors, ``(images, labels)`` tuples, or dicts with
                ``"pixel_values"``/``"image"``), e.g. a ``DataLoader`` over f's training set.
            max_batches: use only the first batches.
            progress: show a progress bar.
        """
        if self.target == "M" and self.scaled and iter(data) is data:
            raise TypeError(
                "fit() reads the data twice (M, then the scale): pass a re-iterable such as a DataLoader or a list, "
                "not a generator or iterator"
            )

        def batches(desc: str):
            for i, batch in enumerate(tqdm(data, desc=desc, disable=not progress, total=max_batches)):
                if max_batches is not None and i >= max_batches:
                    break
                yield batch_images(batch).to(self.device)

        if self.target == "M":
            m = MaxLogitMean()
            for x in batches("introspect: target M"):
                m.update(self.model(self._check_input(x)))
            m.sync()
            self.target_value.fill_(m.compute())
        if self.scaled:
            self.scaler.reset()
            for x in batches("introspect: feature scale"):
                if self.takes_factors:
                    self.scaler.update(self.introspective_factors(x)[1])
                else:
                    self.scaler.update(self.flat_features(x)[1])
            self.scaler.sync()
            if not bool(self.scaler.fitted):
                raise ValueError("fit() got no batches: pass a non-empty iterable of training images")
        return self

    def extra_repr(self) -> str:
        target = "M" if self.target == "M" else float(self.target_value)
        layers = ", ".join(f"{c.name} ({c.kind})" for c in self.classifiers)
        return f"loss={self.loss}, target={target}, classifiers=[{layers}], num_features={self.num_features}"
