"""Grad-CAM ("why P?") and contrastive Grad-CAM ("why P, rather than Q?") for any timm classifier.

The contrastive map of the paper (Appendix A) back-propagates J = CE(z, Q) instead of the logit z_P to a
feature map A, averages the gradient over positions into channel weights alpha, and shows
ReLU(sum_k alpha_k A_k). Since dJ/dz = softmax(z) - e_Q, the weights of every Q are ``a(p) - a(e_Q)``
with ``a(v)`` the weights of the logit combination ``v . z``; :class:`Explainer` picks how to get them:

* closed form (``"closed-form"``): the head averages the final map and then no longer sees positions
  (checked, see :mod:`.closed_form`): no backward pass through f;
* autograd at the final map (max or attention pooling), at a layer the user names, or, for ViT-style
  heads that read only the class token, at the last block's ``norm1``: one backward pass per class needed
  (for the whole batch), none per image.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import nn

from ...errors import InputShapeError, InvalidArgumentError, NoClassifierError, NoSpatialMapError
from .closed_form import head_on_mean, linear_classifier, pooled_head_reason, tail_grid
from .contrast import Contrast, class_names, resolve_contrast
from .gradients import capture_output, vjp_weights
from .layout import FeatureLayout, patch_mean, resolve_layout, spatial
from .result import Explanation, Plan, normalize_maps, upsample_maps

__all__ = ["METHODS", "Explainer", "contrastive_cam", "grad_cam"]

METHODS = ("auto", "closed-form", "autograd")
FINAL = "forward_features"


def _arch(model: nn.Module) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__


def _last_norm1(model: nn.Module) -> str | None:
    """The last transformer block's ``norm1`` (``blocks.<last>.norm1``), where CAM libraries look in a ViT."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) and hasattr(blocks[-1], "norm1"):
        return f"blocks.{len(blocks) - 1}.norm1"
    names = [name for name, _ in model.named_modules() if name.endswith("norm1")]
    return names[-1] if names else None


class Explainer:
    """Explains a timm classifier's predictions with Grad-CAM and contrastive maps, a batch at a time.

    Args:
        model: a timm classifier (``forward_features`` + ``forward_head``); put in eval mode.
        target_layer: module path of the layer to explain at (autograd); default: the final feature map
            (closed form where the head allows it), or the last block's ``norm1`` for class-token heads.
        method: ``"auto"``, ``"closed-form"`` (refuse if the head does not allow it) or ``"autograd"``.
        label_names: class names (default: the model's ``pretrained_cfg["label_names"]``).
        layout: ``"NCHW"`` / ``"NHWC"`` for a 4-d target layer when the model's ``output_fmt`` is not its format.

    Example:
        >>> explainer = Explainer(model)                         # doctest: +SKIP
        >>> out = explainer(images, contrast="all")              # doctest: +SKIP
        >>> out.maps("contrastive").shape                        # (B, N, H, W)   # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, target_layer: str | None = None, method: str = "auto",
                 label_names: Sequence[str] | None = None, layout: str | None = None) -> None:
        if method not in METHODS:
            raise InvalidArgumentError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        if method == "closed-form" and target_layer is not None:
            raise InvalidArgumentError("the closed form is for the final feature map; a named target_layer needs "
                                       "method='autograd' (or 'auto')")
        if getattr(model, "num_classes", None) == 0:
            raise NoClassifierError(f"{_arch(model)} has num_classes=0: there are no class logits to explain; build "
                                    "it with timm.create_model(name, num_classes=N) and train its classifier")
        for name in ("forward_features", "forward_head"):
            if not callable(getattr(model, name, None)):
                raise InvalidArgumentError(f"{_arch(model)} has no {name}(): explain a timm classifier")
        self.model = model.eval()
        self.target_layer = target_layer
        self.method = method
        self.fmt = layout
        if target_layer is not None:
            self._module(target_layer)  # a clear error for a wrong name, now
        self.label_names = class_names(model, label_names)
        num_classes = getattr(model, "num_classes", None)
        if self.label_names is not None and num_classes and len(self.label_names) != num_classes:
            raise InvalidArgumentError(f"{len(self.label_names)} label_names for a model with {num_classes} classes")
        self._plans: dict[tuple, Plan] = {}

    def _module(self, name: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError as err:
            names = [n for n, _ in self.model.named_modules() if n]
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InvalidArgumentError(f"{_arch(self.model)} has no module {name!r}{hint} (see "
                                       "[n for n, _ in model.named_modules()])") from err

    # --- planning ---------------------------------------------------------------------------------

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            hint = " (add a batch dimension: x.unsqueeze(0))" if isinstance(x, torch.Tensor) and x.dim() == 3 else ""
            raise InputShapeError(f"expected a batch of images (B, C, H, W), got {shape}{hint}")
        if not x.is_floating_point():
            raise InputShapeError(f"got {x.dtype} images: pass float images normalized with the model's mean and std "
                                  "(timm.data.create_transform(**timm.data.resolve_model_data_config(model)))")
        if x.shape[0] == 0:
            raise InputShapeError("got an empty batch")
        if x.is_inference():  # made under torch.inference_mode(): a normal copy, which autograd can record
            with torch.inference_mode(False):
                x = x.clone()
        param = next(self.model.parameters(), None)
        return x.detach().to(param.dtype) if param is not None else x.detach()

    def _run_capturing(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """f's logits, and the output of ``layer`` as a grad-enabled leaf they are computed from."""
        with capture_output(self.model.get_submodule(layer), layer) as outputs:
            logits = self.model.forward_head(self.model.forward_features(x))
        if len(outputs) != 1:
            raise InvalidArgumentError(f"target layer {layer} runs {len(outputs)} times in one forward pass: name a "
                                       "layer that runs once")
        return logits, outputs[0]

    def _layer_output(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        with torch.no_grad():
            return self._run_capturing(x, layer)[1]

    def plan(self, x: torch.Tensor) -> Plan:
        """How this model is explained at the size of ``x`` (worked out on its first image, then cached)."""
        with torch.inference_mode(False):  # the plan may need a backward pass, also under torch.inference_mode()
            x = self._check(x)
            key = (tuple(x.shape[1:]), x.dtype, x.device)
            if key not in self._plans:
                self._plans[key] = self._make_plan(x[:1])
            return self._plans[key]

    def _make_plan(self, probe: torch.Tensor) -> Plan:
        hw = tuple(probe.shape[2:])
        if self.target_layer is not None:
            layout = resolve_layout(self.model, self._layer_output(probe, self.target_layer), hw, self.target_layer,
                                    self.fmt)
            return Plan("autograd", self.target_layer, layout, reason="target layer given")
        with torch.no_grad():
            features = self.model.forward_features(probe)
        reasons = []
        try:
            layout = resolve_layout(self.model, features, hw)
        except NoSpatialMapError as err:
            layout, reasons = None, [str(err)]
        if layout is not None:
            if self.method != "autograd":
                why = pooled_head_reason(self.model, features, layout)
                if why is None:
                    grid = tail_grid(self.model, features, layout)
                    linear = linear_classifier(self.model, features, layout, grid)
                    return Plan("closed-form", FINAL, layout, "linear" if linear else "head-jacobian", grid,
                                "average pooling, then " + (f"one linear layer ({linear})" if linear else
                                                            "a position-free head"), classifier=linear)
                if self.method == "closed-form":
                    raise InvalidArgumentError(f"{_arch(self.model)}: the closed form does not apply: {why}; use "
                                               "method='auto' or 'autograd'")
                reasons.append(why)
            if self._reaches_patches(features, layout):
                return Plan("autograd", FINAL, layout, reason="; ".join(reasons) or "method='autograd'")
            reasons.append("the logits do not depend on the patch positions of the final map (only on prefix tokens)")
        elif self.method == "closed-form":
            raise InvalidArgumentError(f"the closed form needs a spatial final map: {reasons[0]}")
        fallback = _last_norm1(self.model)
        if fallback is None:
            raise NoSpatialMapError(f"{_arch(self.model)}: no map to explain: {'; '.join(reasons)}")
        try:
            layout = resolve_layout(self.model, self._layer_output(probe, fallback), hw, fallback, self.fmt)
        except NoSpatialMapError as err:
            raise NoSpatialMapError(f"{'; '.join(reasons)}; and at {fallback}: {err}") from err
        return Plan("autograd", fallback, layout, reason="; ".join(reasons) + f": Grad-CAM at {fallback}")

    def _reaches_patches(self, features: torch.Tensor, layout: FeatureLayout) -> bool:
        leaf = features.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model.forward_head(leaf)
            vector = torch.linspace(1.0, 2.0, logits.shape[1], dtype=logits.dtype, device=logits.device)
            (grad,) = torch.autograd.grad(logits, leaf, vector.expand_as(logits), allow_unused=True)
        return grad is not None and bool(spatial(grad, layout).abs().amax() > 0)

    # --- explaining --------------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, contrast: Contrast = None) -> Explanation:
        """Explain a batch: Grad-CAM of each prediction P and the contrastive map of each Q (see
        :func:`~timm_introspect.apps.explain.contrast.resolve_contrast` for ``contrast``; default: the runner-up).

        Works under ``torch.no_grad()`` and ``torch.inference_mode()`` too: the gradients it needs are taken in a
        local grad mode, and the maps come back as ordinary (detached) tensors."""
        with torch.inference_mode(False):
            return self._explain(x, contrast)

    def _explain(self, x: torch.Tensor, contrast: Contrast) -> Explanation:
        plan = self.plan(x)
        x = self._check(x)
        if plan.method == "closed-form":
            logits, maps, rows, p_rows, classes, contrast_q = self._closed_form(x, plan, contrast)
        else:
            logits, maps, rows, p_rows, classes, contrast_q = self._autograd(x, plan, contrast)
        prediction = logits.argmax(dim=1)
        class_maps = torch.einsum("bsc,bchw->bshw", rows.expand(x.shape[0], -1, -1), maps)
        p_map = torch.einsum("bc,bchw->bhw", p_rows, maps)
        slot = torch.searchsorted(classes, prediction)
        batch = torch.arange(x.shape[0], device=x.device)
        gcam = class_maps[batch, slot].relu()
        slots = torch.searchsorted(classes, contrast_q.contiguous())
        contrastive = (p_map[:, None] - class_maps[batch[:, None], slots]).relu()
        return Explanation(logits, prediction, contrast_q, gcam.detach(), contrastive.detach(), plan, self.label_names,
                           tuple(x.shape[2:]))

    def _classes(self, logits: torch.Tensor, contrast: Contrast) -> tuple[torch.Tensor, torch.Tensor]:
        contrast_q = resolve_contrast(contrast, logits, self.label_names)
        return torch.unique(torch.cat([logits.argmax(dim=1), contrast_q.flatten()])), contrast_q

    def _closed_form(self, x: torch.Tensor, plan: Plan, contrast: Contrast):
        with torch.no_grad():
            features = self.model.forward_features(x)
            logits = self.model.forward_head(features)
        probs = torch.softmax(logits, dim=1)
        classes, contrast_q = self._classes(logits, contrast)
        positions = plan.layout.positions
        if plan.tail == "linear":
            weight = self.model.get_submodule(plan.classifier).weight.detach().to(probs.dtype)
            rows, p_rows = weight[classes][None] / positions, probs @ weight / positions
        else:
            mean = patch_mean(features, plan.layout).detach().requires_grad_(True)
            with torch.enable_grad():
                tail_logits = head_on_mean(self.model, mean, features, plan.layout, plan.grid)
                rows, p_rows = vjp_weights(tail_logits, mean, classes, probs, lambda g: g / positions)
        return logits, spatial(features, plan.layout), rows, p_rows, classes, contrast_q

    def _autograd(self, x: torch.Tensor, plan: Plan, contrast: Contrast):
        with torch.enable_grad():
            if plan.layer == FINAL:
                with torch.no_grad():
                    features = self.model.forward_features(x)
                leaf = features.detach().requires_grad_(True)
                logits = self.model.forward_head(leaf)
            else:
                logits, leaf = self._run_capturing(x, plan.layer)
            probs = torch.softmax(logits.detach(), dim=1)
            classes, contrast_q = self._classes(logits.detach(), contrast)
            layout = plan.layout

            def reduce(grads: torch.Tensor) -> torch.Tensor:
                return spatial(grads.flatten(0, 1), layout).mean(dim=(2, 3)).unflatten(0, grads.shape[:2])

            rows, p_rows = vjp_weights(logits, leaf, classes, probs, reduce)
        if plan.layer != FINAL and rows.abs().amax() == 0 and p_rows.abs().amax() == 0:
            raise NoSpatialMapError(f"the logits do not depend on the patch positions of {plan.layer} (a head that "
                                    "reads only the class token): name an earlier layer, e.g. "
                                    f"{_last_norm1(self.model) or 'a block before the last'}")
        return logits.detach(), spatial(leaf.detach(), layout), rows, p_rows, classes, contrast_q


def grad_cam(model: nn.Module, x: torch.Tensor, target_layer: str | None = None, method: str = "auto",
             size: tuple[int, int] | None = None) -> torch.Tensor:
    """Grad-CAM of each image's predicted class ("why P?"): ``(B, H, W)`` maps in [0, 1] at the image size."""
    out = Explainer(model, target_layer, method)(x)
    return normalize_maps(upsample_maps(out.grad_cam, size or out.input_size))


def contrastive_cam(model: nn.Module, x: torch.Tensor, contrast: Contrast = None, target_layer: str | None = None,
                    method: str = "auto", label_names: Sequence[str] | None = None,
                    size: tuple[int, int] | None = None) -> torch.Tensor:
    """Contrastive Grad-CAM "why P, rather than Q?": ``(B, K, H, W)`` maps in [0, 1] at the image size.

    ``contrast``: a class index or name, a list of them, ``"all"`` (K = N, in class order) or ``None`` (each
    image's runner-up class, K = 1).
    """
    out = Explainer(model, target_layer, method, label_names)(x, contrast)
    return normalize_maps(upsample_maps(out.contrastive, size or out.input_size))
