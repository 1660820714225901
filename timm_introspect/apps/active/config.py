"""Settings of an active-learning run (:class:`ActiveConfig`), built from the named presets.

The presets are plain data in :data:`timm_introspect.training.recipes.ACTIVE_PRESETS` (``PROTOCOLS`` here):

=============  ===========================================================================================
preset         what
=============  ===========================================================================================
``paper``      the paper's (Section 6, Appendix C.8): CIFAR-stem ResNet-18, 100 random labels + 1,000 queried
               per round for 20 rounds, the whole training split as the pool, the whole test split, CIFAR-10-C
               Gaussian noise at all 5 severities (50,000 images, as the release). For a GPU.
``cpu``        the CPU backbone recipe's architecture (``resnet10s_cifar``), 100 + 400 x 5 rounds, a seeded pool
               of 10,000 training images, 2,000 test images and Gaussian noise on the same 2,000 (400 per
               severity 1-5); per round f trains 12 epochs (at least 100 steps, batch 32) and H at least 500
               steps: all strategies x {f, H} x 2 seeds in about half an hour on 2 cores (two runs at a time,
               one thread each).
``cpu-badge``  the ``cpu`` preset with the BADGE code's per-round training: f and H train until 99 % accuracy
               on the labeled set (f at most 100 epochs, H at most 300), f on the images without augmentation,
               and dropout only where BALD samples it (f's for BALD via f, H's for BALD via H). About 16 min a
               run on one thread (2,100 labeled images: f 22 epochs, H 17).
``quick``      a minute-long end-to-end check: 40 + 40 x 2 rounds, 1,000 pool and 200 test images, 1 epoch.
=============  ===========================================================================================

Two per-round schedules: by default f trains a fixed SGD schedule (``schedule``, with at least ``min_steps`` steps)
through :func:`~timm_introspect.training.loop.train_loop`, so a round's cost is known in advance. With
``until_train_accuracy`` (the BADGE code's: 0.99) f trains at ``schedule``'s constant learning rate until its
accuracy on the labeled images (one eval pass after each epoch) reaches it, at most ``max_epochs`` epochs
(:func:`~timm_introspect.apps.active.until.train_until`); H likewise, at most ``head_max_epochs``. BADGE itself
uses Adam at lr 1e-4 (and clips gradients); here the optimizer stays SGD. ``augment=False`` trains f on the images as
they are (the BADGE code's CIFAR-10 setting); ``dropout="bald"`` keeps dropout only where BALD samples it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from ...errors import InvalidArgumentError
from ...training.loop import Schedule
from ...training.recipes import ACTIVE_ALIASES, ACTIVE_PRESETS, SCHEDULES

__all__ = ["DROPOUT_MODES", "PROTOCOLS", "ActiveConfig", "preset_name", "protocol_config"]

#: The active-learning presets (:data:`timm_introspect.training.recipes.ACTIVE_PRESETS`).
PROTOCOLS = ACTIVE_PRESETS

#: ``ActiveConfig.dropout``: "always" (f and H keep their dropout for every strategy), "bald" (only where BALD
#: samples it: f's for BALD via f, H's for BALD via H; none otherwise, as the BADGE code)
DROPOUT_MODES = ("always", "bald")

# fields added after runs were recorded: to_dict leaves them out at these defaults, so that those runs' folders
# (whose signature lacks them) still resume
_LATER_FIELDS = {"until_train_accuracy": None, "max_epochs": 100, "head_max_epochs": 300, "dropout": "always",
                 "augment": True}


def _f_schedule() -> Schedule:
    return Schedule(**SCHEDULES["backbone-active"])


def _h_schedule() -> Schedule:
    return Schedule(**SCHEDULES["head-active"])


@dataclass
class ActiveConfig:
    """One active-learning run: strategy, rounds, and how f and H are trained each round.

    Args:
        strategy: a query strategy (:func:`~timm_introspect.apps.active.list_strategies`).
        via: query through ``"f"`` or through ``"H"``.
        initial: random labels before the first round.
        query_size: images queried per round.
        rounds: query rounds; f and H are trained and evaluated ``rounds + 1`` times (labeled sets of
            ``initial + k * query_size`` images, k = 0 .. rounds).
        seed: seeds the initial labels, f's initialization, data order, augmentation, H, dropout masks and
            the strategies' draws, per round (a resumed run repeats them exactly).
        reset: re-initialize f every round (the BADGE code's choice); ``False`` continues from the last
            round's weights (with a fresh optimizer and schedule).
        model: a timm architecture for 32 px input (e.g. ``resnet18_cifar``, ``resnet10s_cifar``).
        drop_rate: timm's dropout before f's classifier (BALD's Monte Carlo dropout through f).
        dropout: ``"always"``: f and H are trained with ``drop_rate`` / ``head_drop_rate`` for every strategy;
            ``"bald"``: f's only for BALD via f, H's only for BALD via H, none otherwise (the BADGE code's choice).
            The rates in use are :attr:`f_drop_rate` and :attr:`h_drop_rate`.
        batch_size, schedule, min_steps: f's training; a round trains ``max(schedule.epochs, epochs for
            min_steps steps)`` epochs, so that small labeled sets still get enough steps.
        until_train_accuracy: ``None`` (the fixed schedule above), or train each round until f's accuracy on the
            labeled images (eval mode, one pass after each epoch) reaches this (the BADGE code's 0.99), at
            ``schedule.lr`` held constant after a one-epoch warm-up (``schedule.epochs`` / ``kind`` and
            ``min_steps`` unused); H likewise on its inputs. Each round records its epochs and final training
            accuracy (``history[k]["training"]``).
        max_epochs, head_max_epochs: the most epochs f / H train in one round under ``until_train_accuracy``.
        augment: f trains on randomly cropped and flipped images (``True``), or on the images as they are (the
            BADGE code's CIFAR-10 training: normalization only).
        loss: the introspection loss of r_x (the paper's ``"mse-M"``).
        scale: how r_x is scaled before H (:class:`~timm_introspect.IntrospectiveHead`'s ``scale``): the paper's
            ``"maxabs"`` ([-1, 1] per dimension), ``"standard"`` or ``"none"``; fitted on the labeled set.
        hidden, head_drop_rate: H, the paper's MLP; ``head_drop_rate`` is the dropout after each hidden
            activation (BALD's Monte Carlo dropout through H).
        head_batch_size, head_schedule, head_min_steps: H's training, as f's.
        mc_passes: BALD's dropout passes.
        eval_batch_size: images per forward pass for scoring the pool and the test sets.
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"`` for training (accelerate).
    """

    strategy: str = "entropy"
    via: str = "f"
    initial: int = 100
    query_size: int = 1000
    rounds: int = 20
    seed: int = 0
    reset: bool = True
    model: str = "resnet18_cifar"
    drop_rate: float = 0.3
    batch_size: int = 32
    schedule: Schedule = field(default_factory=_f_schedule)
    min_steps: int = 100
    loss: str = "mse-M"
    scale: str = "maxabs"
    hidden: tuple[int, ...] = (300, 100)
    head_drop_rate: float = 0.3
    head_batch_size: int = 64
    head_schedule: Schedule = field(default_factory=_h_schedule)
    head_min_steps: int = 500
    mc_passes: int = 10
    eval_batch_size: int = 500
    mixed_precision: str = "no"
    until_train_accuracy: float | None = None
    max_epochs: int = 100
    head_max_epochs: int = 300
    dropout: str = "always"
    augment: bool = True

    def __post_init__(self) -> None:
        from .strategies import STRATEGIES

        self.strategy = self.strategy.strip().lower().replace("-", "_")
        if self.strategy not in STRATEGIES:
            raise InvalidArgumentError(f"unknown query strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if self.via not in ("f", "H"):
            raise InvalidArgumentError(f"via must be 'f' or 'H', got {self.via!r}")
        for name in ("initial", "query_size", "batch_size", "head_batch_size", "eval_batch_size", "mc_passes"):
            if int(getattr(self, name)) <= 0:
                raise InvalidArgumentError(f"{name} must be positive, got {getattr(self, name)}")
        if self.rounds < 0 or self.min_steps < 0 or self.head_min_steps < 0:
            raise InvalidArgumentError("rounds, min_steps and head_min_steps must be 0 or more")
        if not 0 <= self.drop_rate < 1 or not 0 <= self.head_drop_rate < 1:
            raise InvalidArgumentError("drop_rate and head_drop_rate must be in [0, 1)")
        if self.strategy == "bald" and (self.drop_rate if self.via == "f" else self.head_drop_rate) <= 0:
            raise InvalidArgumentError(f"BALD through {self.via} samples dropout masks: set "
                                       f"{'drop_rate' if self.via == 'f' else 'head_drop_rate'} > 0 (e.g. 0.3)")
        if self.dropout not in DROPOUT_MODES:
            raise InvalidArgumentError(f"dropout must be one of {', '.join(DROPOUT_MODES)}, got {self.dropout!r}")
        if self.until_train_accuracy is not None and not 0 < self.until_train_accuracy <= 1:
            raise InvalidArgumentError(f"until_train_accuracy must be in (0, 1], got {self.until_train_accuracy}")
        if self.max_epochs < 1 or self.head_max_epochs < 1:
            raise InvalidArgumentError(f"max_epochs and head_max_epochs must be at least 1, got {self.max_epochs} and "
                                       f"{self.head_max_epochs}")
        if self.scale not in ("maxabs", "standard", "none"):
            raise InvalidArgumentError(f"scale must be 'maxabs', 'standard' or 'none', got {self.scale!r}")
        if isinstance(self.schedule, dict):
            self.schedule = Schedule(**self.schedule)
        if isinstance(self.head_schedule, dict):
            self.head_schedule = Schedule(**self.head_schedule)
        self.hidden = tuple(int(w) for w in self.hidden)

    @property
    def labeled_sizes(self) -> list[int]:
        """Labeled images at each of the ``rounds + 1`` trainings."""
        return [self.initial + k * self.query_size for k in range(self.rounds + 1)]

    @property
    def f_drop_rate(self) -> float:
        """The dropout f is trained with: ``drop_rate``, or under ``dropout="bald"`` 0 unless BALD via f."""
        needed = self.dropout == "always" or (self.strategy == "bald" and self.via == "f")
        return self.drop_rate if needed else 0.0

    @property
    def h_drop_rate(self) -> float:
        """The dropout H is trained with: ``head_drop_rate``, or under ``dropout="bald"`` 0 unless BALD via H."""
        needed = self.dropout == "always" or (self.strategy == "bald" and self.via == "H")
        return self.head_drop_rate if needed else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what a checkpoint records and a resume must match); the fields added later are left out
        at their defaults."""
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        for name, default in _LATER_FIELDS.items():
            if out[name] == default:
                del out[name]
        return out


def preset_name(protocol: str) -> str:
    """The preset ``protocol`` names: itself, or the new name of an old one (``smoke`` -> ``quick``, with a
    :class:`DeprecationWarning`)."""
    if protocol in ACTIVE_ALIASES:
        new = ACTIVE_ALIASES[protocol]
        warnings.warn(f"the active-learning preset {protocol!r} is now {new!r}; {protocol!r} will be removed",
                      DeprecationWarning, stacklevel=3)
        return new
    if protocol not in PROTOCOLS:
        raise InvalidArgumentError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    return protocol


def protocol_config(protocol: str, **overrides: Any) -> ActiveConfig:
    """The :class:`ActiveConfig` of a named protocol, with ``overrides`` (``None`` values are ignored);
    ``epochs`` / ``head_epochs`` set the epochs of f's / H's schedule."""
    protocol = preset_name(protocol)
    values = {**PROTOCOLS[protocol]["config"], **{k: v for k, v in overrides.items() if v is not None}}
    for key, name in (("epochs", "schedule"), ("head_epochs", "head_schedule")):
        if key in values:
            base = values.get(name) or {"schedule": _f_schedule, "head_schedule": _h_schedule}[name]()
            if isinstance(base, dict):
                base = Schedule(**base)
            values[name] = dataclasses.replace(base, epochs=int(values.pop(key)))
    return ActiveConfig(**values)
