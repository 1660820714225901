"""Post-hoc calibrators of a fixed f, fitted on held-out clean images: the baselines H is judged against.

- **ETS**, ensemble temperature scaling (Zhang, Kailkhura & Han, "Mix-n-Match", ICML 2020):
  ``p = w1 softmax(z / T) + w2 softmax(z) + w3 / N`` with ``w`` on the simplex; T is fitted first, then ``w``,
  both by the same loss on the held-out set (the authors' code fits both by MSE, the default here).
- **DAC**, density-aware calibration (Tomani, Waseda, Shen & Cremers, ICML 2023): a per-sample temperature
  ``T(x) = sum_l w_l s_l(x) + w_0`` from k-nearest-neighbour distances ``s_l(x)`` of x's L2-normalized features
  at several layers to the training images' ones (:func:`knn_distances`); ``w_l >= 0`` and ``w_0`` fitted
  with L-BFGS-B on the held-out set (the authors' code: MSE, bounds ``[0, 1e4]`` and ``[-100, 100]``, start at 1).
  Combined with TS or ETS by applying them to the DAC-scaled logits ``z / T(x)``.

Everything here is a pure function of tensors; calibrated outputs are returned as log-probabilities, so that
every metric of :mod:`timm_introspect.core.metrics` (which takes logits) applies unchanged. The optimizers are
SciPy's, as in both papers' code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidArgumentError

__all__ = ["CALIBRATORS", "DensityTemperature", "EnsembleTemperature", "fit_calibrators", "fit_dac", "fit_ets",
           "knn_distances", "scaled_temperature_fit"]

LOSSES = ("mse", "nll")


def _check(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> tuple[np.ndarray, np.ndarray]:
    if loss not in LOSSES:
        raise InvalidArgumentError(f"loss must be one of {LOSSES}, got {loss!r}")
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or logits.shape[0] == 0:
        raise InvalidArgumentError(
            f"need logits (n, classes) and n labels with n >= 1, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    z = logits.detach().double().cpu().numpy()
    onehot = np.eye(z.shape[1])[labels.detach().long().cpu().numpy()]
    return z, onehot


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _loss(p: np.ndarray, onehot: np.ndarray, loss: str) -> float:
    if loss == "mse":
        return float(np.mean((p - onehot) ** 2))
    return float(-np.sum(onehot * np.log(np.clip(p, 1e-20, None))) / len(p))


def scaled_temperature_fit(logits: torch.Tensor, labels: torch.Tensor, loss: str = "mse") -> float:
    """One temperature T in [0.05, 5] minimizing ``loss`` of ``softmax(z / T)`` (ETS's first step)."""
    from scipy import optimize

    z, onehot = _check(logits, labels, loss)
    res = optimize.minimize(lambda t: _loss(_softmax(z / t[0]), onehot, loss), np.array([1.0]), method="L-BFGS-B",
                            bounds=[(0.05, 5.0)], tol=1e-12)
    return float(res.x[0])


@dataclass(frozen=True)
class EnsembleTemperature:
    """ETS: ``p = w[0] softmax(z / T) + w[1] softmax(z) + w[2] / N``."""

    temperature: float
    weights: tuple[float, float, float]

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        z = logits.double()
        w = self.weights
        p = w[0] * F.softmax(z / self.temperature, 1) + w[1] * F.softmax(z, 1) + w[2] / z.shape[1]
        return p.to(logits.dtype)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (usable wherever logits are)."""
        return self.probs(logits).double().clamp_min(1e-300).log().to(logits.dtype)


def fit_ets(logits: torch.Tensor, labels: torch.Tensor, loss: str = "mse") -> EnsembleTemperature:
    """Fit ETS on held-out logits and labels: T by ``loss``, then the simplex weights by ``loss`` (SLSQP)."""
    from scipy import optimize

    t = scaled_temperature_fit(logits, labels, loss)
    z, onehot = _check(logits, labels, loss)
    parts = (_softmax(z / t), _softmax(z), np.full_like(z, 1.0 / z.shape[1]))

    def objective(w: np.ndarray) -> float:
        p = w[0] * parts[0] + w[1] * parts[1] + w[2] * parts[2]
        return _loss(p / p.sum(axis=1, keepdims=True), onehot, loss)

    res = optimize.minimize(objective, np.array([1.0, 0.0, 0.0]), method="SLSQP", bounds=[(0.0, 1.0)] * 3,
                            constraints={"type": "eq", "fun": lambda w: np.sum(w) - 1.0}, tol=1e-12)
    w = np.clip(res.x, 0.0, 1.0)
    w = w / w.sum()
    return EnsembleTemperature(t, (float(w[0]), float(w[1]), float(w[2])))


@torch.no_grad()
def knn_distances(bank: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Squared L2 distance from each L2-normalized query row to its k-th nearest L2-normalized bank row.

    This is the density score of DAC (and of the k-NN OOD detector of Sun et al., 2022): on unit vectors,
    ``|q - b|^2 = 2 - 2 q.b``, computed exactly by matrix products in chunks; the squared distance is what the
    authors' faiss ``IndexFlatL2`` search returns.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(bank):
        raise InvalidArgumentError(f"k must be an integer in [1, {len(bank)}] (the bank's size), got {k!r}")
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise InvalidArgumentError(f"bank and queries must be (n, d) with the same d, got {tuple(bank.shape)} and "
                                   f"{tuple(queries.shape)}")
    b = F.normalize(bank.float(), dim=1, eps=1e-10)
    out = []
    for i in range(0, len(queries), chunk):
        q = F.normalize(queries[i : i + chunk].float(), dim=1, eps=1e-10)
        sim = torch.topk(q @ b.T, k, dim=1).values[:, -1]
        out.append((2.0 - 2.0 * sim).clamp_min(0.0))
    return torch.cat(out) if out else queries.new_zeros(0)


@dataclass(frozen=True)
class DensityTemperature:
    """DAC's per-sample temperature ``T(x) = scores(x) . weights + bias`` (clipped to > 0)."""

    weights: tuple[float, ...]
    bias: float

    def temperature(self, scores: torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        if scores.ndim != 2 or scores.shape[1] != len(w):
            raise InvalidArgumentError(f"need scores (n, {len(w)}) (one per layer), got {tuple(scores.shape)}")
        return (scores.double() @ w + self.bias).clamp_min(1e-20)

    def __call__(self, logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The DAC-scaled logits ``z / T(x)``."""
        return (logits.double() / self.temperature(scores)[:, None]).to(logits.dtype)


def fit_dac(logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | Sequence[torch.Tensor],
            loss: str = "mse") -> DensityTemperature:
    """Fit DAC's weights on held-out logits, labels and per-layer density scores ``(n, layers)``."""
    from scipy import optimize

    z, onehot = _check(logits, labels, loss)
    s = torch.stack(list(scores), 1) if isinstance(scores, (list, tuple)) else scores
    s = s.detach().double().cpu().numpy()
    if s.ndim != 2 or s.shape[0] != z.shape[0]:
        raise InvalidArgumentError(f"need scores (n, layers) for the {z.shape[0]} logits, got {s.shape}")
    layers = s.shape[1]

    def objective(w: np.ndarray) -> float:
        t = np.clip(s @ w[:-1] + w[-1], 1e-20, None)
        return _loss(_softmax(z / t[:, None]), onehot, loss)

    res = optimize.minimize(objective, np.ones(layers + 1), method="L-BFGS-B",
                            bounds=[(0.0, 1e4)] * layers + [(-100.0, 100.0)], tol=1e-12, options={"eps": 1e-7})
    return DensityTemperature(tuple(float(w) for w in res.x[:-1]), float(res.x[-1]))


#: the post-hoc calibrators :func:`fit_calibrators` fits, by name (prefixed with the model they calibrate)
CALIBRATORS = ("TS", "ETS", "DAC+TS", "DAC+ETS")


def fit_calibrators(logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None = None,
                    methods: Sequence[str] = CALIBRATORS) -> dict[str, Callable[..., torch.Tensor]]:
    """Fit post-hoc calibrators of a model's logits on held-out images; each maps ``(logits, scores)`` to
    calibrated logits (log-probabilities for the ETS ones).

    ``"TS"``: temperature scaling (NLL, Guo et al.); ``"ETS"``: ensemble temperature scaling (MSE, the authors'
    setting); ``"DAC+TS"`` / ``"DAC+ETS"``: DAC's per-sample temperature (MSE, the authors' setting) from the
    per-layer density ``scores`` (needed for these two), then TS or ETS on the DAC-scaled logits.
    """
    from .metrics import fit_temperature

    unknown = sorted(set(methods) - set(CALIBRATORS))
    if unknown:
        raise InvalidArgumentError(f"unknown calibrator(s) {unknown}; choose from {CALIBRATORS}")
    out: dict[str, Callable[..., torch.Tensor]] = {}
    if "TS" in methods:
        out["TS"] = _Chain(temperature=fit_temperature(logits, labels))
    if "ETS" in methods:
        out["ETS"] = _Chain(ets=fit_ets(logits, labels))
    if any(m.startswith("DAC") for m in methods):
        if scores is None:
            raise InvalidArgumentError("DAC needs the held-out images' density scores (scores=...)")
        dac = fit_dac(logits, labels, scores)
        scaled = dac(logits, scores)
        if "DAC+TS" in methods:
            out["DAC+TS"] = _Chain(dac=dac, temperature=fit_temperature(scaled, labels))
        if "DAC+ETS" in methods:
            out["DAC+ETS"] = _Chain(dac=dac, ets=fit_ets(scaled, labels))
    return out


@dataclass(frozen=True)
class _Chain:
    """DAC's per-sample temperature (if any), then one temperature or ETS: ``(logits, scores) -> logits``."""

    dac: DensityTemperature | None = None
    temperature: float | None = None
    ets: EnsembleTemperature | None = None

    def __call__(self, logits: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        if self.dac is not None:
            if scores is None:
                raise InvalidArgumentError("this calibrator is density-aware: pass the images' density scores")
            logits = self.dac(logits, scores)
        if self.temperature is not None:
            logits = logits / self.temperature
        return self.ets(logits) if self.ets is not None else logits
