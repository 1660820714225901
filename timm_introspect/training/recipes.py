"""Every named recipe, as plain data: schedules, the main job's presets, the active-learning and OOD presets.

=====================  ==========================================================================================
name                   what
=====================  ==========================================================================================
:data:`SCHEDULES`      SGD schedules (:class:`~timm_introspect.training.loop.Schedule` arguments) for f and for H
:data:`PRESETS`        the main job, ``train-backbone`` and ``fit`` (``--preset cpu | quick | paper``)
:data:`ACTIVE_PRESETS` active learning (``active --preset paper | cpu | cpu-badge | quick``; ``protocol_config``)
:data:`OOD_PRESETS`    the OOD job's subset sizes (``ood --preset full | quick``)
=====================  ==========================================================================================

Values are dicts of built-in types only (a schedule is the keyword arguments of ``Schedule``), so a recipe can
be printed, compared, written to JSON and overridden with ``dict(recipe, epochs=...)``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ACTIVE_ALIASES", "ACTIVE_PRESETS", "OOD_PRESETS", "PRESETS", "SCHEDULES"]

#: Named schedules: the paper's recipe for f and for H, fast ones, the CPU recipe and active learning's.
SCHEDULES: dict[str, dict[str, Any]] = {
    "backbone-paper": dict(epochs=200, lr=0.1, weight_decay=5e-4, kind="paper"),
    "backbone-fast": dict(epochs=30, lr=0.1, weight_decay=5e-4, kind="onecycle"),
    "head-paper": dict(epochs=200, lr=0.1, weight_decay=5e-3, kind="paper"),
    "head-fast": dict(epochs=20, lr=0.1, weight_decay=5e-3, kind="onecycle"),
    # the CPU recipe (README): f in about 13 minutes on 2 cores; H as in the paper but shorter (fidelity study)
    "backbone-cpu": dict(epochs=30, lr=0.3, weight_decay=5e-4, kind="linear", warmup=0.15, label_smoothing=0.0,
                         nesterov=True, decay_1d=False),
    "head-cpu": dict(epochs=20, lr=0.1, weight_decay=5e-3, kind="onecycle"),
    # active learning, per round (ActiveConfig's defaults). H at lr 0.5, not the paper's 0.1: with a few hundred
    # steps on small labeled sets, SGD at 0.1 leaves the sigmoid MLP far from fitted (a check on 900 labeled
    # images: 21 % test accuracy after 500 steps at lr 0.1 for an f of 30 %; 32 % after 600 steps at lr 0.5 for
    # an f of 35 %)
    "backbone-active": dict(epochs=12, lr=0.05, weight_decay=5e-4, kind="linear", warmup=0.15, nesterov=True,
                            decay_1d=False),
    "head-active": dict(epochs=20, lr=0.5, weight_decay=5e-3, kind="onecycle"),
}

#: The main job's presets (``run``, ``train-backbone``, ``fit``): "cpu" is the CPU recipe of the main job (README);
#: "quick" a smoke run in minutes; "paper" the paper's recipe (Appendix C.1). ``backbone`` / ``head``: schedules.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(model="resnet10s_cifar", cifar_stem=True, train_limit=None, test_limit=None, batch_size=256,
                holdout=0.1, channels_last=True, corruption_images=1000, scale="standard",
                backbone=SCHEDULES["backbone-cpu"], head=SCHEDULES["head-cpu"]),
    "quick": dict(model="resnet18", cifar_stem=True, train_limit=4000, test_limit=2000, batch_size=64,
                  backbone=dict(SCHEDULES["backbone-fast"], epochs=4), head=dict(SCHEDULES["head-fast"], epochs=20)),
    "paper": dict(model="resnet18", cifar_stem=True, train_limit=None, test_limit=None, batch_size=128,
                  backbone=SCHEDULES["backbone-paper"], head=SCHEDULES["head-paper"]),
}

#: Active learning: name -> {"config": ActiveConfig arguments, "data": pool / test sizes and the Gaussian-noise
#: layout}. paper: the paper's (Section 6, Appendix C.8), for a GPU; cpu: resnet10s_cifar, 100 + 400 x 5 rounds;
#: cpu-badge: cpu with the BADGE code's per-round training (f and H until 99 % training accuracy, capped; dropout
#: only where BALD samples it); quick: a minute-long end-to-end check (40 + 40 x 2 rounds, 1,000 pool and 200
#: test images, 1 epoch).
ACTIVE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "config": dict(model="resnet18_cifar", initial=100, query_size=1000, rounds=20, batch_size=128,
                       schedule=dict(epochs=50, lr=0.1, weight_decay=5e-4, kind="onecycle", nesterov=True),
                       min_steps=1000, head_batch_size=128, head_min_steps=1000,
                       head_schedule=dict(epochs=50, lr=0.1, weight_decay=5e-3, kind="onecycle")),
        "data": dict(pool=None, test=None, noise="all"),
    },
    "cpu": {
        "config": dict(model="resnet10s_cifar", initial=100, query_size=400, rounds=5),
        "data": dict(pool=10000, test=2000, noise="spread"),
    },
    # as the BADGE code trains: each round until 99 % accuracy on the labeled set, on the images without
    # augmentation, dropout only for BALD; f at the cpu preset's lr held constant (after a one-epoch warm-up), H at
    # its lr likewise; the caps end a round that never gets there (each round records its epochs)
    "cpu-badge": {
        "config": dict(model="resnet10s_cifar", initial=100, query_size=400, rounds=5, until_train_accuracy=0.99,
                       max_epochs=100, head_max_epochs=300, dropout="bald", augment=False),
        "data": dict(pool=10000, test=2000, noise="spread"),
    },
    "quick": {
        "config": dict(model="resnet10s_cifar", initial=40, query_size=40, rounds=2, min_steps=8, head_min_steps=10,
                       schedule=dict(epochs=1, lr=0.05, weight_decay=5e-4, kind="linear", nesterov=True,
                                     decay_1d=False),
                       head_schedule=dict(epochs=2, lr=0.1, weight_decay=5e-3, kind="onecycle"), mc_passes=4),
        "data": dict(pool=1000, test=200, noise="spread"),
    },
}

#: Old names of active-learning presets, accepted for one release: ``smoke`` is ``quick``.
ACTIVE_ALIASES: dict[str, str] = {"smoke": "quick"}

#: The OOD job's subset sizes: "full" its defaults; "quick" a CPU run in a few minutes (fewer images; the attack
#: protocol is unchanged).
OOD_PRESETS: dict[str, dict[str, int]] = {
    "full": dict(id_images=1000, ood_images=1000, fit_images=10000),
    "quick": dict(id_images=48, ood_images=48, fit_images=1000),
}
