"""IntrospectiveHead: r_x from one forward pass of a timm classifier, and H on top of it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..core.classifier import ClassifierLayer, find_classifiers
from ..core.features import Factors
from ..core.introspect import Introspection, eval_mode, introspect, introspect_outputs
from ..core.losses import parse_loss
from ..core.scaling import create_scaler, fit_scaler
from ..core.stats import fit_target
from ..data.images import batch_images
from ..errors import InputShapeError, InvalidArgumentError, NotFittedError, UnsupportedClassifierError
from ..io.hub_mixin import IntrospectiveHubMixin
from ..log import tqdm
from ..nets.mlp import IntrospectiveMLP
from ..nets.registry import create_net
from .outputs import IntrospectiveOutput, IntrospectivePass

__all__ = ["IntrospectiveHead", "IntrospectiveOutput", "IntrospectivePass"]


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
        if isinstance(model, IntrospectiveHead):
            raise InvalidArgumentError("model is already an IntrospectiveHead: wrap its timm classifier f instead "
                                       "(IntrospectiveHead.wrap(head.model, ...)), or use the head as it is")
        loss, suffix_target = parse_loss(loss)
        if suffix_target is not None:
            target = suffix_target
        if isinstance(target, str) and target != "M" or not isinstance(target, (str, int, float)) or (
                not isinstance(target, str) and not math.isfinite(target)):
            raise InvalidArgumentError(
                f"target must be a finite number or 'M' (the mean max-logit, fitted by fit_statistics()); "
                f"got {target!r}")

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
        factor_shapes = {c.name: tuple(c.weight.shape[:2]) for c in self.classifiers} if self.takes_factors else None
        self.scaler = create_scaler(scaling, self.num_features, factor_shapes)
        self.scaling: str = scaling
        label_names = label_names or (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
        if label_names is not None and len(label_names) != self.num_classes:
            raise InvalidArgumentError(f"{len(label_names)} label_names for a model with {self.num_classes} classes")
        self.label_names = list(label_names) if label_names is not None else None
        #: evaluation results for the model card: {split: {"f" | "H" | ...: {metric: value}}}
        self.metrics: dict[str, dict[str, dict[str, float]]] = {}
        #: their reliability diagrams, {split: {model: core.metrics.reliability_bins(...)}} (the card's figure)
        self.reliability: dict[str, dict[str, dict[str, list[float]]]] = {}
        self.dataset: str | None = None  # the dataset f and H were trained on (a Hub id or a name), for the card
        #: held-out clean images neither f nor H saw (robustness.calibration_images), and T and the OOD threshold
        self.calibration: dict[str, Any] | None = None
        self.fitted_calibration: dict[str, Any] | None = None  # fitted on them (training.calibrate, evaluate_head)
        self.h_training: dict[str, Any] | None = None  # what H trained on (train_head sets it; None: unknown)

    @classmethod
    def wrap(cls, model: nn.Module, **kwargs: Any) -> IntrospectiveHead:
        """Wrap a trained timm classifier; takes the constructor's arguments (see the class docstring)."""
        return cls(model, **kwargs)

    def train(self, mode: bool = True) -> IntrospectiveHead:
        super().train(mode)
        self.model.eval()  # f stays in eval mode: train() only switches H (and anything else but f)
        return self

    @property
    def device(self) -> torch.device:
        return self.target_value.device

    def target_tensor(self) -> torch.Tensor:
        """The loss target c (a 0-d tensor): the fixed number, or the fitted M."""
        if self.target == "M" and torch.isnan(self.target_value):
            raise NotFittedError(
                f"loss {self.loss}-M uses the target M (mean max-logit over the training set), which is not "
                "fitted: call head.fit_statistics(train_loader) (or train H with timm_introspect.train_head) first, "
                "or pass a numeric target"
            )
        return self.target_value

    def check_input(self, x: torch.Tensor, keep_graph: bool = False) -> torch.Tensor:
        """``x`` checked to be a float batch ``(B, C, H, W)`` and cast to f's dtype; detached unless ``keep_graph``."""
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
        return x if keep_graph else x.detach()

    def input_size(self) -> tuple[int, ...]:
        """``(C, H, W)`` from f's pretrained config."""
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        return tuple(cfg.get("input_size", ("C", "H", "W")))

    def check_classifiers(self) -> None:
        """Refuse a classifier replaced or resized after :meth:`wrap` (``model.fc = nn.Linear(...)``)."""
        for c in self.classifiers:
            now = dict(self.model.named_modules()).get(c.name) if c.name else self.model
            shape = tuple(getattr(now, "weight", torch.empty(0)).shape)
            if now is not c.module or shape != self.feature_shapes[c.name]:
                raise UnsupportedClassifierError(
                    f"f's classifier {c.name} was replaced or resized after IntrospectiveHead.wrap() (weight "
                    f"{self.feature_shapes[c.name]}, now {type(now).__name__} {shape}): wrap f again after changing it")

    @torch.no_grad()
    def base_logits(self, x: torch.Tensor) -> torch.Tensor:
        """f's logits alone (f in eval mode), bit-identical to ``model(x)`` in eval mode."""
        self.check_classifiers()
        with eval_mode(self.model):
            return self.model(self.check_input(x))

    # --- the introspective pass (core.introspect), the one place r_x is computed ------------------------

    def introspect(self, x: torch.Tensor, differentiable: bool = False) -> Introspection:
        """The introspective pass of f on images ``x``: f's logits, and r_x factored or materialized on demand.

        With ``differentiable=True`` (and ``x.requires_grad``) the graph to ``x`` is kept: r_x, and H on it,
        can be differentiated w.r.t. the image (ODIN, adversarial attacks).
        """
        differentiable = bool(differentiable and x.requires_grad and torch.is_grad_enabled())
        self.check_classifiers()
        x = self.check_input(x, keep_graph=differentiable)
        return introspect(self.model, self.classifiers, x, self.loss, self.target_tensor(), self.num_classes,
                          self.input_size(), differentiable=differentiable)

    def introspect_outputs(self, logits: torch.Tensor, h: torch.Tensor) -> Introspection:
        """The same pass from f's logits ``(B, N)`` and its classifier's input ``(B, d)`` computed earlier
        (a model with one linear classifier): for features cached once and introspected under several losses."""
        if len(self.classifiers) != 1:
            raise UnsupportedClassifierError(
                f"r_x from f's outputs needs one classifier; this model has {len(self.classifiers)}: introspect images")
        self.check_classifiers()
        return introspect_outputs(self.classifiers[0], logits, h, self.loss, self.target_tensor())

    def introspective_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, Factors]:
        """f's logits and r_x in factored form, never materialized: per classifier layer ``(delta, h)``.

        ``delta`` is ``(B, S, N)`` and ``h`` is ``(B, S, d)`` over S positions (1 for a pooled linear
        head), with ``r_x = sum_s delta[:, s, :, None] * h[:, s, None, :]`` (flattened: the raw
        features of :meth:`flat_features`). Only for linear and 1x1-conv classifiers.
        """
        out = self.introspect(x)
        return out.logits, out.factors()

    def introspective_features(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The raw introspective features r_x: per-sample dJ/dW for the classifier weight W.

        Returns:
            ``(B, *W.shape)`` (e.g. ``(B, N, d)``) for a model with one classifier; for a model with
            several (e.g. ``deit_*_distilled``: ``head`` and ``head_dist``), a dict from the layer's
            module path to its ``(B, *W.shape)`` gradient.
        """
        features = self.introspect(x).features()
        return next(iter(features.values())) if len(features) == 1 else features

    def flat_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f's logits ``(B, N)`` and the raw features flattened and concatenated, ``(B, F)``."""
        out = self.introspect(x)
        return out.logits, out.flat()

    def raw_inputs(self, out: Introspection) -> Any:
        """What H's scaler reads from a pass: the raw factors for an H on factors, else the flat r_x."""
        return out.factors() if self.takes_factors else out.flat()

    def net_inputs(self, out: Introspection) -> Any:
        """What H reads from a pass: the scaled flat r_x ``(B, F)`` (H's dtype), or the scaled factors."""
        if self.takes_factors:
            return self.scaler(out.factors())
        return self.scaler(out.flat().to(self.target_value.dtype))

    @property
    def takes_factors(self) -> bool:
        """Whether H reads r_x in factored form (:mod:`timm_introspect.nets.lowrank`) instead of materialized."""
        return bool(getattr(self.introspective_net, "takes_factors", False))

    def forward(self, x: torch.Tensor) -> IntrospectiveOutput:
        out = self.introspect(x)
        features = self.net_inputs(out)
        return IntrospectiveOutput(logits=self.introspective_net(features), base_logits=out.logits,
                                   features=None if self.takes_factors else features)

    def forward_introspection(self, x: torch.Tensor, hidden: bool = False,
                              differentiable: bool | None = None) -> IntrospectivePass:
        """Run f and H on images ``x`` as :meth:`forward` does, returning every intermediate a detector reads.

        Differentiable w.r.t. ``x`` when ``x`` requires grad (``differentiable=None``: decided by that), H in the
        caller's grad mode either way. ``hidden`` also records H's hidden activations.
        """
        if differentiable is None:
            differentiable = x.requires_grad
        out = self.introspect(x, differentiable=differentiable)
        factors = out.factors(skip_functional=True)
        if self.takes_factors and len(factors) != len(self.classifiers):
            raise UnsupportedClassifierError("an H on factors needs linear or 1x1-conv classifiers")
        features = self.scaler(factors) if self.takes_factors else self.net_inputs(out)
        logits, acts, linear_out = self._run_net(features, hidden)
        return IntrospectivePass(out.logits, logits, factors, out.penultimate, features, acts, linear_out)

    def _run_net(self, net_input: Any, hidden: bool) -> tuple[torch.Tensor, list[torch.Tensor], bool]:
        """H's logits, and the inputs of its ``nn.Linear`` layers after the first (its hidden activations)."""
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        linears = [m for m in self.introspective_net.modules() if isinstance(m, nn.Linear)] if hidden else []
        handles = [m.register_forward_hook(lambda m, a, out: seen.append((a[0], out))) for m in linears]
        try:
            logits = self.introspective_net(net_input)
        finally:
            for handle in handles:
                handle.remove()
        acts = [a for a, _ in seen if a is not net_input]
        return logits, acts, bool(seen) and seen[-1][1] is logits

    @property
    def scaled(self) -> bool:
        """Whether r_x (or its factors) is scaled before H (:attr:`scaling` says how)."""
        return not isinstance(self.scaler, nn.Identity)

    # --- statistics: target M and the feature scale, one routine for every caller -------------------------

    @torch.no_grad()
    def fit_statistics(self, logits: Iterable[torch.Tensor] | None = None,
                       features: Callable[[], Iterable[Any]] | None = None, sync: bool = True) -> IntrospectiveHead:
        """Fit target M (for "-M" losses) from batches of f's ``logits``, then the feature scale from the raw r_x
        batches ``features()`` yields (called after M is set, since r_x depends on M).

        Every caller fits its statistics here (:meth:`fit`, the training job, active learning, the benchmarks);
        the estimates are exact and independent of batching (:func:`~timm_introspect.core.stats.fit_target`,
        :func:`~timm_introspect.core.scaling.fit_scaler`). ``sync`` reduces across processes (each having seen
        its own shard); pass ``False`` when every process saw every batch.
        """
        if self.target == "M" and logits is not None:
            self.target_value.fill_(fit_target(logits, sync=sync))
        if self.scaled and features is not None:
            fit_scaler(self.scaler, features(), sync=sync)
        return self

    @torch.no_grad()
    def fit(self, data: Iterable[Any], max_batches: int | None = None, progress: bool = True) -> IntrospectiveHead:
        """Estimate target M (for "-M" losses) and the feature scale (``scale=``) on training images.

        H itself is trained by :func:`timm_introspect.train_head` (which calls this first). The statistics
        are exact, independent of batching, and reduced across processes when ``torch.distributed`` is
        initialized and each process passes its own shard.

        Args:
            data: an iterable of batches (tensors, ``(images, labels)`` tuples, or dicts with
                ``"pixel_values"``/``"image"``), e.g. a ``DataLoader`` over f's training set.
            max_batches: use only the first batches.
            progress: show a progress bar.
        """
        self.check_classifiers()
        if self.target == "M" and self.scaled and iter(data) is data:
            raise InvalidArgumentError(
                "fit() reads the data twice (M, then the scale): pass a re-iterable such as a DataLoader or a list, "
                "not a generator or iterator"
            )

        def batches(desc: str):
            for i, batch in enumerate(tqdm(data, desc=desc, disable=not progress, total=max_batches)):
                if max_batches is not None and i >= max_batches:
                    break
                yield batch_images(batch).to(self.device)

        def logits():
            for x in batches("introspect: target M"):
                yield self.base_logits(x)

        def features():
            for x in batches("introspect: feature scale"):
                yield self.raw_inputs(self.introspect(x))

        return self.fit_statistics(logits() if self.target == "M" else None, features)

    def extra_repr(self) -> str:
        target = "M" if self.target == "M" else float(self.target_value)
        layers = ", ".join(f"{c.name} ({c.kind})" for c in self.classifiers)
        return f"loss={self.loss}, target={target}, classifiers=[{layers}], num_features={self.num_features}"
