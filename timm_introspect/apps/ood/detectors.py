"""OOD detectors on H and on the introspective features, with pytorch-ood's API (larger score = more OOD).

Output-based scores on H are pytorch-ood's own detectors with H as the model
(:class:`~timm_introspect.apps.ood.path.IntrospectiveLogits`): MSP, MaxLogit, Energy, and ODIN, whose input
perturbation then goes through the whole introspective path (f, r_x, scaling, H). Two more:

* :class:`LinearGradNorm`: GradNorm (Huang et al. 2021) in closed form. For a last layer ``z = W a + b`` the
  gradient of ``KL(u || softmax(z / T))`` w.r.t. ``W`` is ``(softmax(z / T) - u) a^T / T``, rank one, so its
  L1 norm is ``||softmax(z / T) - u||_1 ||a||_1 / T``: no backward pass. On f (``a = h``) it is, up to the
  factor ``N c``, the L1 norm of r_x for the CE loss with target ``c 1_N``. :class:`IntrospectiveGradNorm`
  applies it to H's output layer.
* :class:`IntrospectiveKNN`: KNN (Sun et al. 2022) on r_x. The cosine similarity of two rank-one features
  is a product, ``cos(delta h^T, delta' h'^T) = cos(delta, delta') cos(h, h')``, so the fitted bank holds
  ``N + d`` numbers per image instead of ``N d`` and r_x is never materialized; the score equals
  pytorch-ood's KNN on the flattened r_x.

Feature detectors on H's hidden layers are pytorch-ood's Mahalanobis / KNN / ViM with
:class:`~timm_introspect.apps.ood.path.IntrospectiveHidden` as the encoder (:class:`IntrospectiveMahalanobis`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from pytorch_ood.api import RequiresFittingException, StructuredDetector
from pytorch_ood.detector import ODIN, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax
from timm.data import resolve_model_data_config
from torch import nn

from ...core.features import Factors
from ...data.images import batch_images
from ...errors import InvalidArgumentError, UnsupportedClassifierError
from ...model.head import IntrospectiveHead
from .path import IntrospectiveHidden, IntrospectiveLogits, introspective_pass

__all__ = ["IntrospectiveEnergy", "IntrospectiveGradNorm", "IntrospectiveKNN", "IntrospectiveMSP",
           "IntrospectiveMahalanobis", "IntrospectiveMaxLogit", "IntrospectiveODIN", "LinearGradNorm",
           "gradnorm_score", "rank_one_cosine"]


def _labels(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and isinstance(batch[1], torch.Tensor):
        return batch[1]
    if isinstance(batch, dict) and isinstance(batch.get("label"), torch.Tensor):
        return batch["label"]
    return None


class IntrospectiveMSP(MaxSoftmax):
    """Maximum softmax probability of H (negated): pytorch-ood's :class:`MaxSoftmax` with H as the model."""

    def __init__(self, head: IntrospectiveHead, t: float = 1.0) -> None:
        super().__init__(IntrospectiveLogits(head), t)


class IntrospectiveMaxLogit(MaxLogit):
    """H's largest logit (negated): pytorch-ood's :class:`MaxLogit` with H as the model."""

    def __init__(self, head: IntrospectiveHead) -> None:
        super().__init__(IntrospectiveLogits(head))


class IntrospectiveEnergy(EnergyBased):
    """The energy ``-T logsumexp(H(x) / T)``: pytorch-ood's :class:`EnergyBased` with H as the model."""

    def __init__(self, head: IntrospectiveHead, t: float = 1.0) -> None:
        super().__init__(IntrospectiveLogits(head), t)


class IntrospectiveODIN(ODIN):
    """ODIN on H: ``x~ = x - eps sign(grad_x CE(H(x) / T, argmax))``, the gradient taken through H, the
    scaling, r_x and f; score ``-max softmax(H(x~) / T)``.

    ``eps`` is in [0, 1] pixel units (pytorch-ood divides the step by ``norm_std``, by default f's
    normalization std); T = 1000 and eps = 0.0014 are ODIN's CIFAR values.
    """

    def __init__(self, head: IntrospectiveHead, eps: float = 0.0014, temperature: float = 1000.0,
                 norm_std: list[float] | None = None) -> None:
        if norm_std is None:
            norm_std = list(resolve_model_data_config(head.model)["std"])
        super().__init__(IntrospectiveLogits(head), eps=eps, temperature=temperature, norm_std=norm_std)


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


class IntrospectiveGradNorm(LinearGradNorm):
    """GradNorm of H's output layer, in closed form: ``-||softmax(H(x)) - u||_1 ||a_H||_1`` with ``a_H`` the
    input of H's last linear layer."""

    def __init__(self, head: IntrospectiveHead, temperature: float = 1.0) -> None:
        def encoder(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = introspective_pass(head, x)
            if not out.head_output_is_linear or not out.hidden:
                raise UnsupportedClassifierError("closed-form GradNorm on H needs an H whose output layer is an "
                                                 "nn.Linear after a hidden layer")
            return out.logits, out.hidden[-1]

        super().__init__(encoder, temperature)


class IntrospectiveMahalanobis(Mahalanobis):
    """pytorch-ood's Mahalanobis (class means, shared covariance) on H's hidden layer ``layer``.

    ``layer=0`` reads scaled r_x through H's learned first projection; ``-1`` (default) is the input of
    H's output layer, the analogue of f's penultimate features.
    """

    def __init__(self, head: IntrospectiveHead, layer: int = -1) -> None:
        super().__init__(IntrospectiveHidden(head, layer))


def _unit_factors(factors: Factors) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(delta, h)`` of one rank-one r_x, each scaled to unit L2 norm (float64)."""
    if len(factors) != 1:
        raise UnsupportedClassifierError(f"IntrospectiveKNN needs one classifier layer; this model has {list(factors)}")
    delta, h = next(iter(factors.values()))
    if delta.shape[1] != 1:
        raise UnsupportedClassifierError(f"IntrospectiveKNN needs a pooled classifier (rank-one r_x); this one has "
                                         f"{delta.shape[1]} positions")
    delta, h = delta[:, 0].double(), h[:, 0].double()
    return (delta / delta.norm(dim=1, keepdim=True).clamp_min(1e-12),
            h / h.norm(dim=1, keepdim=True).clamp_min(1e-12))


def rank_one_cosine(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``(A, B)`` cosine similarities of rank-one matrices ``delta h^T`` given unit-norm factors:
    ``cos(delta_a, delta_b) * cos(h_a, h_b)``."""
    return (a[0] @ b[0].T) * (a[1] @ b[1].T)


class IntrospectiveKNN(StructuredDetector):
    """KNN on r_x (unit-normalized, as Sun et al.), computed from its factors: score = the Euclidean distance
    of the normalized r_x to its k-th nearest normalized training r_x, ``sqrt(2 - 2 cos)``.

    Args:
        head: the introspective model (its f gives r_x; H is not used). ``None`` to use
            :meth:`fit_structured` / :meth:`predict_structured` only.
        k: the neighbour whose distance is the score.
        chunk: test images compared with the whole bank at once.
    """

    requires_fit = True

    def __init__(self, head: IntrospectiveHead | None, k: int = 50, chunk: int = 256) -> None:
        self.head = head
        self.k = int(k)
        self.chunk = int(chunk)
        self.bank: tuple[torch.Tensor, torch.Tensor] | None = None

    def _factors(self, x: torch.Tensor) -> Factors:
        if self.head is None:
            raise InvalidArgumentError("this IntrospectiveKNN has no head: use fit_structured / predict_structured")
        with torch.no_grad():
            return introspective_pass(self.head, x, hidden=False).factors

    def fit(self, data_loader: Iterable[Any]) -> IntrospectiveKNN:
        """Keep the normalized factors of r_x of every image in ``data_loader`` (labels below 0 are skipped)."""
        if self.head is None:
            raise InvalidArgumentError("this IntrospectiveKNN has no head: use fit_structured / predict_structured")
        deltas, hs = [], []
        for batch in data_loader:
            x, y = batch_images(batch), _labels(batch)
            keep = slice(None) if y is None else (y >= 0)
            d, h = _unit_factors(self._factors(x[keep].to(self.head.device)))
            deltas.append(d.cpu())
            hs.append(h.cpu())
        return self.fit_structured({"r_x": (torch.cat(deltas)[:, None], torch.cat(hs)[:, None])})

    def fit_structured(self, factors: Factors, labels: torch.Tensor | None = None) -> IntrospectiveKNN:
        """Fit on raw factors ``{layer: (delta (n, 1, N), h (n, 1, d))}`` (labels below 0 are skipped)."""
        delta, h = _unit_factors(factors)
        if labels is not None:
            keep = labels.to(delta.device) >= 0
            delta, h = delta[keep], h[keep]
        if len(delta) < self.k:
            raise InvalidArgumentError(f"k={self.k} exceeds the {len(delta)} images fitted on: fit on more or lower k")
        self.bank = (delta, h)
        return self

    @torch.no_grad()
    def predict_structured(self, factors: Factors) -> torch.Tensor:
        """Scores ``(B,)`` from raw factors ``{layer: (delta (B, 1, N), h (B, 1, d))}``."""
        if self.bank is None:
            raise RequiresFittingException()
        delta, h = _unit_factors(factors)
        bank = tuple(t.to(delta.device) for t in self.bank)
        out = []
        for i in range(0, len(delta), self.chunk):
            sim = rank_one_cosine((delta[i : i + self.chunk], h[i : i + self.chunk]), bank)
            kth = sim.topk(self.k, dim=1).values[:, -1]
            out.append((2 - 2 * kth).clamp_min(0).sqrt())
        return torch.cat(out) if out else delta.new_zeros(0)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_structured(self._factors(x))
