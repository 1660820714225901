"""Query strategies with the shape BADGE's and DeepAL's users know: ``strategy.query(n)`` -> pool indices.

A strategy is built on the pool (:class:`~timm_introspect.apps.active.LabeledPool` and its images) and the current
model (an :class:`~timm_introspect.IntrospectiveHead`: f with its fitted H), and queries through f or through H
(``via``, see :mod:`timm_introspect.apps.active.views`). ``query(n)`` returns ``n`` distinct indices of unlabeled
pool images; label them with ``pool.add(indices)`` and call :meth:`Strategy.update` with the next model.

=====================  =================================================================================
``random``             uniform over the unlabeled images (the model is not read)
``entropy``            largest predictive entropy ``-sum_c p_c log p_c``
``least_confidence``   smallest top probability ``max_c p_c``
``margin``             smallest gap between the two top probabilities
``bald``               largest mutual information between prediction and dropout mask (Gal et al. 2017),
                       ``H[mean_t p_t] - mean_t H[p_t]`` over ``mc_passes`` Monte Carlo dropout passes
``badge``              k-means++ seeding on gradient embeddings (Ash et al. 2020)
=====================  =================================================================================

The strategies are a registry, as the networks H are (:func:`~timm_introspect.nets.registry.register_net`):
:func:`register_strategy` adds a :class:`Strategy` subclass under a name, :func:`list_strategies` names them and
:func:`create_strategy` builds one by name (the active-learning loop and ``ActiveConfig.strategy`` take any
registered name)::

    @register_strategy("first")
    class FirstUnlabeled(Strategy):
        needs_model = False

        def select(self, candidates, n):
            return np.arange(n)  # positions in ``candidates``
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from ...errors import InvalidArgumentError
from ...model.head import IntrospectiveHead
from .badge import kmeans_pp
from .pool import LabeledPool
from .views import QueryView, make_view

__all__ = ["STRATEGIES", "BALDDropout", "BadgeSampling", "EntropySampling", "LeastConfidence", "MarginSampling",
           "RandomSampling", "Strategy", "create_strategy", "list_strategies", "register_strategy"]


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


class Strategy:
    """Base class: picks ``n`` unlabeled pool images to label next.

    Args:
        pool: which pool images are labeled.
        images: the pool's uint8 images ``(size, H, W, 3)``, row i = pool index i.
        head: the current model (f and its fitted H); not needed by ``random``.
        via: ``"f"`` or ``"H"``: which network the strategy reads.
        seed: seed of the strategy's own randomness (random draws, k-means++), e.g. ``[run seed, round]``.
        batch_size: images per forward pass of f.
    """

    #: the registered name (set by :func:`register_strategy`)
    name: ClassVar[str] = ""
    #: whether the strategy reads the model (random does not)
    needs_model: ClassVar[bool] = True

    def __init__(self, pool: LabeledPool, images: np.ndarray, head: IntrospectiveHead | None = None, via: str = "f",
                 seed: int | Sequence[int] = 0, batch_size: int = 500) -> None:
        if len(images) != pool.size:
            raise InvalidArgumentError(f"the pool has {pool.size} images but {len(images)} were given")
        if via not in ("f", "H"):
            raise InvalidArgumentError(f"via must be 'f' (query through f) or 'H' (through H); got {via!r}")
        self.pool, self.images, self.via, self.seed, self.batch_size = pool, images, via, seed, batch_size
        self.view: QueryView | None = None
        if head is not None:
            self.update(head)

    def update(self, head: IntrospectiveHead) -> None:
        """Query with this model from now on (after retraining on the grown labeled set)."""
        self.head = head
        self.view = make_view(head, self.via, self.batch_size) if self.needs_model else None

    def query(self, n: int) -> np.ndarray:
        """``n`` distinct indices of unlabeled pool images, in the order chosen."""
        candidates = self.pool.unlabeled
        if not 0 < n <= len(candidates):
            raise InvalidArgumentError(f"cannot query {n} images: {len(candidates)} of the pool are unlabeled")
        if self.needs_model and self.view is None:
            raise InvalidArgumentError(f"{self.name} reads the model: pass head= or call update(head) first")
        picked = np.asarray(self.select(candidates, n), dtype=np.int64)
        return candidates[picked]

    def select(self, candidates: np.ndarray, n: int) -> np.ndarray:
        """Positions in ``candidates`` (not pool indices) of the ``n`` images to label."""
        raise NotImplementedError

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(via={self.via!r}, pool={self.pool})"


#: name -> strategy class, in the order registered (:func:`register_strategy`)
STRATEGIES: dict[str, type[Strategy]] = {}
S = TypeVar("S", bound="type[Strategy]")


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_") if isinstance(name, str) else ""


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: register a :class:`Strategy` subclass under ``name`` (lower case, ``_`` between words;
    ``-`` is read as ``_``), and set its ``name``."""
    key = _key(name)
    if not key.replace("_", "").isalnum():
        raise InvalidArgumentError(f"a strategy name must be letters, digits and '_'; got {name!r}")

    def wrap(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise InvalidArgumentError(f"register_strategy({name!r}) takes a subclass of Strategy, got {cls!r}")
        if key in STRATEGIES and STRATEGIES[key] is not cls:
            raise InvalidArgumentError(f"a strategy named {key!r} is already registered ({STRATEGIES[key].__name__})")
        STRATEGIES[key] = cls
        cls.name = key
        return cls

    return wrap


@register_strategy("random")
class RandomSampling(Strategy):
    needs_model = False

    def select(self, candidates: np.ndarray, n: int) -> np.ndarray:
        return self.rng().choice(len(candidates), n, replace=False)


class _ScoreSampling(Strategy):
    """The ``n`` candidates with the highest uncertainty score (ties: lower pool index first)."""

    def scores(self, candidates: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def select(self, candidates: np.ndarray, n: int) -> np.ndarray:
        scores = self.scores(candidates).double().cpu().numpy()
        return np.argsort(-scores, kind="stable")[:n]

    def probabilities(self, candidates: np.ndarray) -> torch.Tensor:
        return torch.softmax(self.view.logits(self.images[candidates]).double(), -1)


@register_strategy("entropy")
class EntropySampling(_ScoreSampling):
    def scores(self, candidates: np.ndarray) -> torch.Tensor:
        return _entropy(self.probabilities(candidates))


@register_strategy("least_confidence")
class LeastConfidence(_ScoreSampling):
    def scores(self, candidates: np.ndarray) -> torch.Tensor:
        return -self.probabilities(candidates).amax(-1)


@register_strategy("margin")
class MarginSampling(_ScoreSampling):
    def scores(self, candidates: np.ndarray) -> torch.Tensor:
        top2 = self.probabilities(candidates).topk(2, dim=-1).values
        return -(top2[:, 0] - top2[:, 1])


@register_strategy("bald")
class BALDDropout(_ScoreSampling):
    """BALD with Monte Carlo dropout (``mc_passes`` masks; see :mod:`~timm_introspect.apps.active.views` for where
    the dropout is in f and in H)."""

    def __init__(self, *args, mc_passes: int = 10, **kwargs) -> None:
        if mc_passes < 2:
            raise InvalidArgumentError(f"BALD needs at least 2 Monte Carlo dropout passes, got {mc_passes}")
        self.mc_passes = mc_passes
        super().__init__(*args, **kwargs)

    def scores(self, candidates: np.ndarray) -> torch.Tensor:
        probs = torch.softmax(self.view.mc_logits(self.images[candidates], self.mc_passes).double(), -1)
        return _entropy(probs.mean(0)) - _entropy(probs).mean(0)


@register_strategy("badge")
class BadgeSampling(Strategy):
    """BADGE: k-means++ seeding on the gradient embeddings of the unlabeled images."""

    def select(self, candidates: np.ndarray, n: int) -> np.ndarray:
        return kmeans_pp(self.view.embeddings(self.images[candidates]), n, self.rng())


def list_strategies() -> list[str]:
    """Names of the registered query strategies, in the order registered (the built-in ones first)."""
    return list(STRATEGIES)


def create_strategy(name: str, pool: LabeledPool, images: np.ndarray, head: IntrospectiveHead | None = None,
                    via: str = "f", seed: int | Sequence[int] = 0, batch_size: int = 500, mc_passes: int = 10,
                    **kwargs: Any) -> Strategy:
    """Build a registered query strategy by name.

    Args:
        name: a name from :func:`list_strategies` (``-`` is read as ``_``, case is ignored).
        pool, images, head, via, seed, batch_size: see :class:`Strategy`.
        mc_passes: the number of Monte Carlo dropout passes, given to strategies whose constructor takes it
            (``bald``) and ignored by the others.
        kwargs: further constructor arguments of the strategy.
    """
    key = _key(name)
    if key not in STRATEGIES:
        raise InvalidArgumentError(f"unknown query strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    cls = STRATEGIES[key]
    if "mc_passes" in inspect.signature(cls).parameters:
        kwargs = {"mc_passes": mc_passes, **kwargs}
    return cls(pool, images, head, via=via, seed=seed, batch_size=batch_size, **kwargs)
