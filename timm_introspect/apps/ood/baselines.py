"""OOD detectors on f, the classic post-hoc baselines, with pytorch-ood's API (larger score = more OOD).

Each is pytorch-ood's detector with f (or its penultimate features) as the model, built from an
:class:`~timm_introspect.IntrospectiveHead` and registered (:mod:`.registry`) so that the OOD benchmark runs it
by name on the same introspective pass as the detectors on H (:mod:`.detectors`):

================  =====================================================================================
``msp_f``         maximum softmax probability (Hendrycks & Gimpel 2017)
``maxlogit_f``    largest logit (Hendrycks et al. 2022)
``energy_f``      energy ``-T logsumexp(z / T)`` (Liu et al. 2020)
``odin_f``        ODIN (Liang et al. 2018): temperature and an input perturbation against f
``gradnorm_f``    GradNorm (Huang et al. 2021), in closed form (:class:`LinearGradNorm`)
``react_f``       ReAct (Sun et al. 2021): energy of the clipped penultimate features
``mahalanobis_f`` Mahalanobis distance on the penultimate features (Lee et al. 2018)
``knn_f``         KNN on the normalized penultimate features (Sun et al. 2022)
``vim_f``         ViM (Wang et al. 2022)
================  =====================================================================================

The feature detectors need f with one pooled linear classifier; otherwise they raise
:class:`~timm_introspect.UnsupportedClassifierError`.

:class:`LinearGradNorm` is GradNorm in closed form for any model whose last layer is linear. For a last layer
``z = W a + b`` the gradient of ``KL(u || softmax(z / T))`` w.r.t. ``W`` is ``(softmax(z / T) - u) a^T / T``,
rank one, so its L1 norm is ``||softmax(z / T) - u||_1 ||a||_1 / T``: no backward pass. On f (``a = h``) it is,
up to the factor ``N c``, the L1 norm of r_x for the CE loss with target ``c 1_N``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pytorch_ood.api import StructuredDetector
from pytorch_ood.detector import ODIN, EnergyBased, MaxLogit, MaxSoftmax, ReAct, ViM
from timm.data import resolve_model_data_config
from torch import nn

from ...errors import InvalidArgumentError, UnsupportedClassifierError
from ...model.head import IntrospectiveHead
from .fitting import CheckedKNN, CheckedMahalanobis
from .path import Penultimate
from .registry import PassDetector, register_detector

__all__ = ["ClassicEnergy", "ClassicGradNorm", "ClassicKNN", "ClassicMSP", "ClassicMahalanobis", "ClassicMaxLogit",
           "ClassicODIN", "ClassicReAct", "ClassicViM", "LinearGradNorm", "gradnorm_score"]


def gradnorm_score(logits: torch.Tensor, features: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """GradNorm outlier score ``-||softmax(z / T) - 1/N||_1 ||a||_1 / T`` of a last layer ``z = W a + b``.

    The gradient of ``KL(u || softmax(z / T))`` w.r.t. ``W`` per sample, in L1 norm, negated (larger =
    more OOD). ``features`` ``(B, d)`` are the inputs ``a`` of that layer.
    """
    if logits.dim() != 2 or features.dim() != 2 or logits.shape[0] != features.shape[0]:
        raise InvalidArgumentError(f"expected logits (B, N) and features (B, d); got {tuple(logits.shape)} and "
                                   f"{tuple(features.shape)}")
    p = torch.softmax(logits.double() / temperature, dim=1)
    delta = (p - 1.0 / logits.shape[1]).abs().sum(1)
    return -(delta * features.double().abs().sum(1) / temperature)


class LinearGradNorm(StructuredDetector):
    """GradNorm for a model whose last layer is linear, in closed form (see :func:`gradnorm_score`).

    Args:
        encoder: ``x -> (logits, last-layer inputs)``, e.g. :meth:`for_model` for a timm classifier f.
            ``None`` to use :meth:`predict_structured` only.
        temperature: T of the softmax (1 in the GradNorm paper).
    """

    def __init__(self, encoder: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
                 temperature: float = 1.0) -> None:
        self.encoder = encoder
        self.temperature = float(temperature)

    @classmethod
    def for_model(cls, model: nn.Module, temperature: float = 1.0) -> LinearGradNorm:
        """GradNorm of a timm classifier f whose ``get_classifier()`` is an ``nn.Linear``."""
        classifier = model.get_classifier()
        if not isinstance(classifier, nn.Linear):
            raise UnsupportedClassifierError(
                f"closed-form GradNorm needs a linear classifier; {type(model).__name__}'s is "
                f"{type(classifier).__name__}: use pytorch_ood.detector.GradNorm")

        def encoder(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = model.forward_head(model.forward_features(x), pre_logits=True)
            return classifier(h), h

        return cls(encoder, temperature)

    @torch.no_grad()
    def predict_structured(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Scores ``(B,)`` from logits ``(B, N)`` and the last layer's inputs ``(B, d)``."""
        return gradnorm_score(logits, features, self.temperature)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise InvalidArgumentError("this LinearGradNorm has no encoder: call predict_structured(logits, features)")
        return self.predict_structured(*self.encoder(x))


def _linear_classifier(head: IntrospectiveHead, detector: str) -> nn.Linear:
    classifier = head.model.get_classifier()
    if not isinstance(classifier, nn.Linear):
        raise UnsupportedClassifierError(f"{detector} on f needs a linear classifier; {type(head.model).__name__}'s "
                                         f"is {type(classifier).__name__}")
    return classifier


def _penultimate(p: Any, detector: str) -> torch.Tensor:
    if p.penultimate is None:
        raise UnsupportedClassifierError(f"{detector} reads f's penultimate features: f has no single pooled linear "
                                         "classifier")
    return p.penultimate


class _OnF(PassDetector):
    on, family = "f", "classic"


@register_detector("msp_f")
class ClassicMSP(MaxSoftmax, _OnF):
    """Maximum softmax probability of f (negated): pytorch-ood's :class:`MaxSoftmax` with f as the model."""

    name = "MSP"

    def __init__(self, head: IntrospectiveHead, t: float = 1.0) -> None:
        super().__init__(head.model, t)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_logits(p.base_logits)


@register_detector("maxlogit_f")
class ClassicMaxLogit(MaxLogit, _OnF):
    """f's largest logit (negated): pytorch-ood's :class:`MaxLogit` with f as the model."""

    name = "MaxLogit"

    def __init__(self, head: IntrospectiveHead) -> None:
        super().__init__(head.model)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_logits(p.base_logits)


@register_detector("energy_f")
class ClassicEnergy(EnergyBased, _OnF):
    """The energy ``-T logsumexp(f(x) / T)``: pytorch-ood's :class:`EnergyBased` with f as the model."""

    name = "Energy"

    def __init__(self, head: IntrospectiveHead, t: float = 1.0) -> None:
        super().__init__(head.model, t)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_logits(p.base_logits)


@register_detector("odin_f")
class ClassicODIN(ODIN, _OnF):
    """ODIN on f: pytorch-ood's :class:`ODIN` (its own forward and backward pass through f per batch).

    ``eps`` is in [0, 1] pixel units (divided by ``norm_std``, by default f's normalization std).
    """

    name = "ODIN"

    def __init__(self, head: IntrospectiveHead, eps: float = 0.0014, temperature: float = 1000.0,
                 norm_std: list[float] | None = None) -> None:
        if norm_std is None:
            norm_std = list(resolve_model_data_config(head.model)["std"])
        super().__init__(head.model, eps=eps, temperature=temperature, norm_std=norm_std)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x)


@register_detector("gradnorm_f")
class ClassicGradNorm(LinearGradNorm, _OnF):
    """GradNorm of f's linear classifier in closed form (:meth:`LinearGradNorm.for_model`)."""

    name = "GradNorm"

    def __init__(self, head: IntrospectiveHead, temperature: float = 1.0) -> None:
        super().__init__(LinearGradNorm.for_model(head.model, temperature).encoder, temperature)

    def fit_pass(self, train: Any, labels: torch.Tensor) -> ClassicGradNorm:
        _penultimate(train, "GradNorm")
        return self

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_structured(p.base_logits, _penultimate(p, "GradNorm"))


@register_detector("react_f")
class ClassicReAct(ReAct, _OnF):
    """ReAct: pytorch-ood's :class:`ReAct` on f's penultimate features (clipped at their ``percentile``
    quantile over the training images) and f's linear classifier."""

    name = "ReAct"

    def __init__(self, head: IntrospectiveHead, percentile: float = 0.9) -> None:
        super().__init__(Penultimate(head.model), _linear_classifier(head, "ReAct"), percentile=percentile)

    def fit_pass(self, train: Any, labels: torch.Tensor) -> ClassicReAct:
        return self.fit_feature_maps(_penultimate(train, "ReAct"), labels)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_feature_maps(_penultimate(p, "ReAct"))


@register_detector("mahalanobis_f")
class ClassicMahalanobis(CheckedMahalanobis, _OnF):
    """pytorch-ood's :class:`Mahalanobis` (class means, shared covariance) on f's penultimate features."""

    name = "Mahalanobis"

    def __init__(self, head: IntrospectiveHead) -> None:
        super().__init__(Penultimate(head.model))
        self.num_classes = head.num_classes  # a fit must see every class (CheckedMahalanobis)

    def fit_pass(self, train: Any, labels: torch.Tensor) -> ClassicMahalanobis:
        return self.fit_features(_penultimate(train, "Mahalanobis"), labels)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_features(_penultimate(p, "Mahalanobis"))


@register_detector("knn_f")
class ClassicKNN(CheckedKNN, _OnF):
    """pytorch-ood's :class:`KNN` on f's normalized penultimate features: the distance to the ``k``-th nearest."""

    name = "KNN"

    def __init__(self, head: IntrospectiveHead, k: int = 50) -> None:
        super().__init__(Penultimate(head.model), k=k)

    def fit_pass(self, train: Any, labels: torch.Tensor) -> ClassicKNN:
        return self.fit_features(_penultimate(train, "KNN"), labels)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_features(_penultimate(p, "KNN"))


@register_detector("vim_f")
class ClassicViM(ViM, _OnF):
    """pytorch-ood's :class:`ViM` on f's penultimate features and linear classifier; ``d``, the dimension of the
    principal subspace, is half the features' by default."""

    name = "ViM"

    def __init__(self, head: IntrospectiveHead, d: int | None = None) -> None:
        classifier = _linear_classifier(head, "ViM")
        super().__init__(Penultimate(head.model), d=classifier.in_features // 2 if d is None else d,
                         w=classifier.weight, b=classifier.bias)

    def fit_pass(self, train: Any, labels: torch.Tensor) -> ClassicViM:
        return self.fit_features(_penultimate(train, "ViM"), labels)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_features(_penultimate(p, "ViM"))
