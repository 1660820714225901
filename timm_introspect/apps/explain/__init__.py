"""Introspective explanations: Grad-CAM ("why P?") and contrastive maps ("why P, rather than Q?").

>>> from timm_introspect.apps.explain import Explainer
>>> out = Explainer(model)(images, contrast="all")     # every Q at once   # doctest: +SKIP
>>> out.maps("contrastive")                            # (B, N, H, W) in [0, 1]   # doctest: +SKIP

Modules: :mod:`.explainer` (the maps), :mod:`.closed_form` (heads that need no backward pass),
:mod:`.gradients` (the autograd path), :mod:`.layout` (NCHW / NHWC / token grids), :mod:`.contrast` (Q),
:mod:`.result`, :mod:`.deletion` (faithfulness), :mod:`.figure` (matplotlib grids, imported lazily),
:mod:`.gradcam_targets` (targets for pytorch-grad-cam), :mod:`.job` (the CLI's job).
"""

from .contrast import class_names, resolve_contrast
from .deletion import DeletionCurves, deletion_curves, deletion_logits, margin_auc
from .explainer import METHODS, Explainer, contrastive_cam, grad_cam
from .gradcam_targets import ContrastiveTarget, token_reshape
from .layout import FeatureLayout, resolve_layout
from .result import Explanation, Plan, normalize_maps, upsample_maps

__all__ = [
    "METHODS",
    "ContrastiveTarget",
    "DeletionCurves",
    "Explainer",
    "Explanation",
    "FeatureLayout",
    "Plan",
    "class_names",
    "contrastive_cam",
    "deletion_curves",
    "deletion_logits",
    "grad_cam",
    "margin_auc",
    "normalize_maps",
    "resolve_contrast",
    "resolve_layout",
    "token_reshape",
    "upsample_maps",
]
