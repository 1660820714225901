"""OOD detectors on H and on the introspective features, with pytorch-ood's API (larger score = more OOD).

Each is registered (:func:`register_detector`; the detectors on f are in :mod:`.baselines`) and can be built by
name with :func:`create_detector`; :func:`list_detectors` names them all.

Output-based scores on H are pytorch-ood's own detectors with H as the model
(:class:`~timm_introspect.apps.ood.path.IntrospectiveLogits`): MSP, MaxLogit, Energy, and ODIN, whose input
perturbation then goes through the whole introspective path (f, r_x, scaling, H). Two more:

* :class:`IntrospectiveGradNorm`: GradNorm (Huang et al. 2021) of H's output layer, in closed form
  (:class:`~timm_introspect.apps.ood.baselines.LinearGradNorm`).
* :class:`IntrospectiveKNN`: KNN (Sun et al. 2022) on r_x. The cosine similarity of two rank-one features
  is a product, ``cos(delta h^T, delta' h'^T) = cos(delta, delta') cos(h, h')``, so the fitted bank holds
  ``N + d`` numbers per image instead of ``N d`` and r_x is never materialized; the score equals
  pytorch-ood's KNN on the flattened r_x.

Feature detectors on H's hidden layers are pytorch-ood's Mahalanobis / KNN / ViM with
:class:`~timm_introspect.apps.ood.path.IntrospectiveHidden` as the encoder (:class:`IntrospectiveMahalanobis`,
:class:`IntrospectiveHiddenKNN`, :class:`IntrospectiveViM`).

================================  ===========================================================================
``msp_h``, ``maxlogit_h``,        MSP, MaxLogit, Energy, ODIN on H's logits
``energy_h``, ``odin_h``
``gradnorm_h``                    GradNorm of H's output layer
``mahalanobis_h``                 Mahalanobis on the input of H's output layer
``mahalanobis_1st_h``             Mahalanobis on H's first hidden layer (a learned projection of scaled r_x)
``knn_h``, ``vim_h``              KNN and ViM on the input of H's output layer
``knn_rx``                        KNN on r_x, from its factors
================================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pytorch_ood.api import RequiresFittingException, StructuredDetector
from pytorch_ood.detector import ODIN, EnergyBased, MaxLogit, MaxSoftmax, ViM
from timm.data import resolve_model_data_config
from torch import nn

from ...core.features import Factors
from ...data.images import batch_images
from ...errors import DataError, InvalidArgumentError, UnsupportedClassifierError
from ...model.head import IntrospectiveHead
from .baselines import LinearGradNorm, gradnorm_score
from .fitting import CheckedKNN, CheckedMahalanobis
from .path import IntrospectiveHidden, IntrospectiveLogits, introspective_pass
from .registry import PassDetector, create_detector, list_detectors, register_detector

__all__ = ["IntrospectiveEnergy", "IntrospectiveGradNorm", "IntrospectiveHiddenKNN", "IntrospectiveKNN",
           "IntrospectiveMSP", "IntrospectiveMahalanobis", "IntrospectiveMaxLogit", "IntrospectiveODIN",
           "IntrospectiveViM", "LinearGradNorm", "PassDetector", "create_detector", "gradnorm_score",
           "list_detectors", "rank_one_cosine", "register_detector"]


def _labels(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and isinstance(batch[1], torch.Tensor):
        return batch[1]
    if isinstance(batch, dict) and isinstance(batch.get("label"), torch.Tensor):
        return batch["label"]
    return None


class _OnH(PassDetector):
    on, family = "H", "introspective"


def _hidden(p: Any, layer: int, detector: str) -> torch.Tensor:
    if not p.hidden:
        raise UnsupportedClassifierError(f"{detector} reads H's hidden layers: this H has none read through "
                                         "nn.Linear")
    return p.hidden[layer]


@register_detector("msp_h")
class IntrospectiveMSP(MaxSoftmax, _OnH):
    """Maximum softmax probability of H (negated): pytorch-ood's :class:`MaxSoftmax` with H as the model."""

    name = "MSP"

    def __init__(self, head: IntrospectiveHead, t: float = 1.0) -> None:
        super().__init__(IntrospectiveLogits(head), t)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_logits(p.logits)


@register_detector("maxlogit_h")
class IntrospectiveMaxLogit(MaxLogit, _OnH):
    """H's largest logit (negated): pytorch-ood's :class:`MaxLogit` with H as the model."""

    name = "MaxLogit"

    def __init__(self, head: IntrospectiveHead) -> None:
        super().__init__(IntrospectiveLogits(head))

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_logits(p.logits)


@register_detector("energy_h")
class IntrospectiveEnergy(EnergyBased, _OnH):
    """The energy ``-T logsumexp(H(x) / T)``: pytorch-ood's :class:`EnergyBased` with H as the model."""

    name = "Energy"

    def __init__(self, head: IntrospectiveHead, t: float = 1.0) -> None:
        super().__init__(IntrospectiveLogits(head), t)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_logits(p.logits)


@register_detector("odin_h")
class IntrospectiveODIN(ODIN, _OnH):
    """ODIN on H: ``x~ = x - eps sign(grad_x CE(H(x) / T, argmax))``, the gradient taken through H, the
    scaling, r_x and f; score ``-max softmax(H(x~) / T)``.

    ``eps`` is in [0, 1] pixel units (pytorch-ood divides the step by ``norm_std``, by default f's
    normalization std); T = 1000 and eps = 0.0014 are ODIN's CIFAR values.
    """

    name = "ODIN"

    def __init__(self, head: IntrospectiveHead, eps: float = 0.0014, temperature: float = 1000.0,
                 norm_std: list[float] | None = None) -> None:
        if norm_std is None:
            norm_std = list(resolve_model_data_config(head.model)["std"])
        super().__init__(IntrospectiveLogits(head), eps=eps, temperature=temperature, norm_std=norm_std)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x)  # its own pass, on the perturbed images


@register_detector("gradnorm_h")
class IntrospectiveGradNorm(LinearGradNorm, _OnH):
    """GradNorm of H's output layer, in closed form: ``-||softmax(H(x)) - u||_1 ||a_H||_1`` with ``a_H`` the
    input of H's last linear layer."""

    name = "GradNorm"

    def __init__(self, head: IntrospectiveHead, temperature: float = 1.0) -> None:
        def encoder(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = introspective_pass(head, x)
            return out.logits, self._output_layer_input(out)

        super().__init__(encoder, temperature)

    @staticmethod
    def _output_layer_input(p: Any) -> torch.Tensor:
        if not getattr(p, "head_output_is_linear", True) or not p.hidden:
            raise UnsupportedClassifierError("closed-form GradNorm on H needs an H whose output layer is an "
                                             "nn.Linear after a hidden layer")
        return p.hidden[-1]

    def fit_pass(self, train: Any, labels: torch.Tensor) -> IntrospectiveGradNorm:
        self._output_layer_input(train)
        return self

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_structured(p.logits, self._output_layer_input(p))


@register_detector("mahalanobis_h")
class IntrospectiveMahalanobis(CheckedMahalanobis, _OnH):
    """pytorch-ood's Mahalanobis (class means, shared covariance) on H's hidden layer ``layer``.

    ``layer=0`` reads scaled r_x through H's learned first projection (registered as ``mahalanobis_1st_h``);
    ``-1`` (default) is the input of H's output layer, the analogue of f's penultimate features.
    """

    def __init__(self, head: IntrospectiveHead, layer: int = -1) -> None:
        super().__init__(IntrospectiveHidden(head, layer))
        self.num_classes = head.num_classes  # a fit must see every class (CheckedMahalanobis)
        self.layer = layer
        self.name = {-1: "Mahalanobis", 0: "Mahalanobis-1st"}.get(layer, f"Mahalanobis-layer{layer}")

    def fit_pass(self, train: Any, labels: torch.Tensor) -> IntrospectiveMahalanobis:
        return self.fit_features(_hidden(train, self.layer, "Mahalanobis"), labels)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_features(_hidden(p, self.layer, "Mahalanobis"))


register_detector("mahalanobis_1st_h", layer=0)(IntrospectiveMahalanobis)


@register_detector("knn_h")
class IntrospectiveHiddenKNN(CheckedKNN, _OnH):
    """pytorch-ood's :class:`KNN` on the normalized input of H's output layer (for KNN on r_x itself, see
    :class:`IntrospectiveKNN`)."""

    name = "KNN"

    def __init__(self, head: IntrospectiveHead, k: int = 50) -> None:
        super().__init__(IntrospectiveHidden(head, -1), k=k)

    def fit_pass(self, train: Any, labels: torch.Tensor) -> IntrospectiveHiddenKNN:
        return self.fit_features(_hidden(train, -1, "KNN"), labels)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_features(_hidden(p, -1, "KNN"))


@register_detector("vim_h")
class IntrospectiveViM(ViM, _OnH):
    """pytorch-ood's :class:`ViM` on the input of H's output layer and that layer's weights; ``d``, the
    dimension of the principal subspace, is half the layer's inputs by default."""

    name = "ViM"

    def __init__(self, head: IntrospectiveHead, d: int | None = None) -> None:
        linears = [m for m in head.introspective_net.modules() if isinstance(m, nn.Linear)]
        if len(linears) < 2:
            raise UnsupportedClassifierError("ViM on H needs an H whose output layer is an nn.Linear after a hidden "
                                             "layer")
        last = linears[-1]
        super().__init__(IntrospectiveHidden(head, -1), d=last.in_features // 2 if d is None else d,
                         w=last.weight, b=last.bias)

    def fit_pass(self, train: Any, labels: torch.Tensor) -> IntrospectiveViM:
        return self.fit_features(_hidden(train, -1, "ViM"), labels)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_features(_hidden(p, -1, "ViM"))


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


@register_detector("knn_rx")
class IntrospectiveKNN(StructuredDetector, _OnH):
    """KNN on r_x (unit-normalized, as Sun et al.), computed from its factors: score = the Euclidean distance
    of the normalized r_x to its k-th nearest normalized training r_x, ``sqrt(2 - 2 cos)``.

    Args:
        head: the introspective model (its f gives r_x; H is not used). ``None`` to use
            :meth:`fit_structured` / :meth:`predict_structured` only.
        k: the neighbour whose distance is the score.
        chunk: test images compared with the whole bank at once.
    """

    name = "KNN r_x"
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
            if y is not None and not bool(keep.any()):
                continue
            d, h = _unit_factors(self._factors(x[keep].to(self.head.device)))
            deltas.append(d.cpu())
            hs.append(h.cpu())
        if not deltas:
            raise DataError(f"{self.name} was fitted on no in-distribution images: pass a loader of the training data")
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

    def fit_pass(self, train: Any, labels: torch.Tensor) -> IntrospectiveKNN:
        return self.fit_structured(train.factors, labels)

    def predict_pass(self, p: Any, x: torch.Tensor) -> torch.Tensor:
        return self.predict_structured(p.factors)
