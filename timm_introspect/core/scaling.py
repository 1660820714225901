"""Scaling introspective features before H.

The paper scales r_x "between [-1, 1]" before H (:class:`FeatureScaler`, :class:`FactorScaler`): every
feature dimension is divided by its largest absolute value over the training set and clamped, so unseen
(e.g. corrupted) inputs stay in range. :class:`StandardScaler` standardizes every dimension instead (mean 0,
standard deviation 1 over the training set), which the fidelity study (``benchmarks/results/fidelity.md``)
found to cost H no accuracy where max-abs scaling does. The statistics are buffers: saved and loaded with
the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import DataError, InvalidArgumentError, NotFittedError
from .features import Factors
from .stats import sync_max, sync_sum

__all__ = ["SCALINGS", "FactorScaler", "FeatureScaler", "StandardScaler", "create_scaler", "fit_scaler",
           "list_scalings", "register_scaling", "scale_features"]


def scale_features(features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``clamp(features / scale, -1, 1)``; dimensions with scale 0 (never active in training) pass as is."""
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (features / safe).clamp(-1.0, 1.0)


def _check_finite(features: torch.Tensor) -> None:
    bad = ~torch.isfinite(features.detach()).flatten(1).all(1)
    if bad.any():
        raise DataError(f"{int(bad.sum())} of {len(bad)} images give non-finite introspective features (NaN or inf): "
                        "the feature scale cannot be fitted; check those images (and f's weights)")


class _Fitted(nn.Module):
    """A ``fitted`` flag saved with the state; checked with one host sync until it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fitted", torch.tensor(False))
        self._fitted_cache = False

    def _mark(self, fitted: bool) -> None:
        self.fitted.fill_(fitted)
        self._fitted_cache = False

    def _check_fitted(self, what: str) -> None:
        if not self._fitted_cache:
            self._fitted_cache = bool(self.fitted)
            if not self._fitted_cache:
                raise NotFittedError(
                    f"the {what} scale is not fitted: call head.fit(train_loader) on the training data "
                    "first (or load a saved model)"
                )

    def _statistics(self) -> list[torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def sync(self) -> None:
        """Reduce the running max-abs across processes (when ``torch.distributed`` is initialized)."""
        for buffer in self._statistics():
            sync_max(buffer)
        flag = self.fitted.to(torch.int32)
        sync_max(flag)
        self._mark(bool(flag))

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._fitted_cache = False
        super()._load_from_state_dict(*args, **kwargs)


class FeatureScaler(_Fitted):
    """Per-dimension max-abs scaling of flat features ``(B, F)``, fitted with :meth:`update`.

    Use :meth:`reset`, then :meth:`update` on every training batch (and :meth:`sync` when processes saw
    different shards); the scaler counts as fitted after the first update.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.zeros(num_features))

    def _statistics(self) -> list[torch.Tensor]:
        return [self.scale]

    def reset(self) -> None:
        self.scale.zero_()
        self._mark(False)

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Fold a batch of training features ``(B, F)`` into the running max-abs."""
        _check_finite(features)
        torch.maximum(self.scale, features.detach().abs().amax(0).to(self.scale), out=self.scale)
        self._mark(True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self._check_fitted("feature")
        return scale_features(features, self.scale)

    def extra_repr(self) -> str:
        return f"num_features={self.scale.numel()}"


class FactorScaler(_Fitted):
    """[-1, 1] scaling of r_x in factored form: ``delta`` per class and ``h`` per feature.

    Each factor is divided by its largest absolute value over the training set and clamped, so the
    rank-one features ``delta' h'^T`` lie in [-1, 1] without ever being materialized. Fitted like
    :class:`FeatureScaler`: :meth:`reset`, then :meth:`update` on training batches.

    Args:
        shapes: classifier layer name -> ``(N, d)``, in the order of the factors.
    """

    def __init__(self, shapes: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        self.names = list(shapes)
        for i, (n, d) in enumerate(shapes.values()):
            self.register_buffer(f"delta_scale_{i}", torch.zeros(n))
            self.register_buffer(f"h_scale_{i}", torch.zeros(d))

    def _scales(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"delta_scale_{i}"), getattr(self, f"h_scale_{i}")

    def _statistics(self) -> list[torch.Tensor]:
        return [s for i in range(len(self.names)) for s in self._scales(i)]

    def reset(self) -> None:
        for i in range(len(self.names)):
            for scale in self._scales(i):
                scale.zero_()
        self._mark(False)

    @torch.no_grad()
    def update(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Fold a batch of training factors (``{name: (delta (B, S, N), h (B, S, d))}``) into the max-abs."""
        for pair in factors.values():
            for factor in pair:
                _check_finite(factor)
        for i, name in enumerate(self.names):
            for scale, factor in zip(self._scales(i), factors[name], strict=False):
                torch.maximum(scale, factor.detach().abs().flatten(0, 1).amax(0).to(scale), out=scale)
        self._mark(True)

    def forward(self, factors: Factors) -> Factors:
        self._check_fitted("factor")
        return {name: tuple(scale_features(f, s) for f, s in zip(factors[name], self._scales(i), strict=False))
                for i, name in enumerate(self.names)}


class StandardScaler(_Fitted):
    """Per-dimension standardization of flat features ``(B, F)``: ``(x - mean) / std`` over the training set.

    Fitted like :class:`FeatureScaler` (:meth:`reset`, :meth:`update` on every training batch, :meth:`sync`
    across processes). Sums are kept in float64; the standard deviation is the population one, and
    dimensions that never vary in training (std 0) are only centred. No clamping: corrupted inputs may
    leave the training range.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sum", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("sum_sq", torch.zeros(num_features, dtype=torch.float64))
        self._moments: tuple[torch.Tensor, torch.Tensor] | None = None

    def _statistics(self) -> list[torch.Tensor]:
        return []  # summed, not max-reduced: see sync()

    def reset(self) -> None:
        for buffer in (self.count, self.sum, self.sum_sq):
            buffer.zero_()
        self._moments = None
        self._mark(False)

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Fold a batch of training features ``(B, F)`` into the running sums."""
        _check_finite(features)
        x = features.detach().to(torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(0).to(self.sum)
        self.sum_sq += x.square().sum(0).to(self.sum_sq)
        self._moments = None
        self._mark(True)

    @torch.no_grad()
    def sync(self) -> None:
        """Sum the statistics over processes (when ``torch.distributed`` is initialized)."""
        for buffer in (self.count, self.sum, self.sum_sq):
            sync_sum(buffer)
        self._moments = None
        super().sync()

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` over the training features, float64."""
        self._check_fitted("standardization (feature)")
        if self._moments is None or self._moments[0].device != self.sum.device:
            mean = self.sum / self.count
            second = self.sum_sq / self.count
            var = (second - mean.square()).clamp_min(0)
            # E[x^2] - mean^2 leaves a rounding remainder (about 1e-16 E[x^2]) for a constant dimension: below
            # 1e-10 E[x^2] a dimension counts as constant and is only centred
            constant = var <= 1e-10 * second
            std = torch.where(constant, torch.ones_like(var), var.sqrt())
            self._moments = (mean, std)
        return self._moments

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._moments = None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse: bool = True):
        # .half() / .float() / .to(dtype) move the sums but keep them float64 (float16 would overflow)
        sums = {name: self._buffers[name] for name in ("count", "sum", "sum_sq")}
        super()._apply(fn, recurse)
        for name, value in sums.items():
            self._buffers[name] = value.to(self._buffers[name].device)
        self._moments = None
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mean, std = self.moments()
        return ((features - mean.to(features.dtype)) / std.to(features.dtype))

    def extra_repr(self) -> str:
        return f"num_features={self.sum.numel()}"


# --- the registry: name -> how to build the scaler for flat r_x, and for r_x in factored form -------------

_SCALINGS: dict[str, tuple[Callable[[int], nn.Module], Callable[[dict[str, tuple[int, int]]], nn.Module] | None]] = {}


def register_scaling(name: str, flat: Callable[[int], nn.Module],
                     factored: Callable[[dict[str, tuple[int, int]]], nn.Module] | None = None) -> None:
    """Register a feature scaling: ``flat(num_features)`` builds it for materialized r_x ``(B, F)``,
    ``factored(shapes)`` (``{classifier: (N, d)}``) for r_x in factored form (``None``: not available).

    A scaler is an ``nn.Module`` with ``reset()``, ``update(batch)``, ``sync()`` and a ``fitted`` buffer
    (see :class:`FeatureScaler`); its statistics are buffers, saved with the model.
    """
    _SCALINGS[name] = (flat, factored)


def list_scalings() -> list[str]:
    """The registered scalings (``IntrospectiveHead(scale=...)``)."""
    return list(_SCALINGS)


def create_scaler(name: str, num_features: int, factor_shapes: dict[str, tuple[int, int]] | None = None) -> nn.Module:
    """The scaler ``name`` for flat r_x of ``num_features`` dimensions, or, given ``factor_shapes``, for r_x in
    factored form."""
    if name not in _SCALINGS:
        raise InvalidArgumentError(f"scale must be one of {', '.join(_SCALINGS)} (or True / False), got {name!r}")
    flat, factored = _SCALINGS[name]
    if factor_shapes is None:
        return flat(num_features)
    if factored is None:
        raise InvalidArgumentError(
            f"scale={name!r} works on materialized r_x; an H on factors (delta, h) never sees r_x: use one of "
            f"{', '.join(k for k, v in _SCALINGS.items() if v[1] is not None)} with this H")
    return factored(factor_shapes)


@torch.no_grad()
def fit_scaler(scaler: nn.Module, batches: Iterable[Any], sync: bool = True) -> nn.Module:
    """Fit ``scaler`` on every batch of raw r_x (flat ``(B, F)`` or factors): reset, update, sync.

    ``sync`` reduces over processes (each having seen its own shard); ``False`` when every process saw all.
    """
    if isinstance(scaler, nn.Identity):
        return scaler
    scaler.reset()
    for batch in batches:
        scaler.update(batch)
    if sync:
        scaler.sync()
    if not bool(scaler.fitted):
        raise DataError("the feature scale got no batches: pass a non-empty iterable of training images")
    return scaler


register_scaling("maxabs", FeatureScaler, FactorScaler)
register_scaling("standard", StandardScaler)
register_scaling("none", lambda num_features: nn.Identity(), lambda shapes: nn.Identity())

#: The built-in feature scalings (see :func:`list_scalings` for all registered ones).
SCALINGS = tuple(list_scalings())
