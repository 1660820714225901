"""Active learning with f and with H (paper, Section 6 and Table 1).

Query strategies in the shape of BADGE / DeepAL (``Strategy.query(n)`` -> pool indices) that read either f
or the introspective network H (``via="f" | "H"``), and a resumable loop that trains f and fits H on the
labeled set every round, evaluates both on clean and Gaussian-noise test images, and queries:

>>> from timm_introspect.apps.active import ActiveConfig, load_active_data, run_active_learning
>>> data = load_active_data("uoft-cs/cifar10", pool=10000, test=2000)                     # doctest: +SKIP
>>> config = ActiveConfig(strategy="badge", via="H", model="resnet10s_cifar", query_size=400, rounds=5)
>>> result = run_active_learning(data, config, "runs/al/badge-H")                        # doctest: +SKIP

Trained as the BADGE code (each round until 99 % accuracy on the labeled set, no augmentation, dropout only where
BALD samples it; the ``cpu-badge`` preset): ``ActiveConfig(..., until_train_accuracy=0.99, max_epochs=100,
augment=False, dropout="bald")``; each round then records its epochs (``history[k]["training"]``).

Where the Monte Carlo dropout of BALD is: in f, timm's ``drop_rate`` (dropout on the pooled features right
before the classifier); in H, the dropout modules of its MLP (``head_drop_rate``). See
:mod:`.views`, :mod:`.strategies`, :mod:`.loop`; the paper's protocol and a CPU one in :mod:`.config`. Strategies are
registered by name (``register_strategy``, ``list_strategies``, ``create_strategy``).
"""

from .badge import gradient_embeddings, kmeans_pp
from .config import PROTOCOLS, ActiveConfig, protocol_config
from .data import ActiveData, corrupted_set, load_active_data
from .job import history_table, run_active
from .loop import load_round, round_seed, run_active_learning
from .pool import LabeledPool
from .strategies import (
    STRATEGIES,
    BadgeSampling,
    BALDDropout,
    EntropySampling,
    LeastConfidence,
    MarginSampling,
    RandomSampling,
    Strategy,
    create_strategy,
    list_strategies,
    register_strategy,
)
from .views import FView, HView, QueryView, backbone_outputs, introspective_inputs, make_view, mc_dropout

__all__ = [
    "PROTOCOLS",
    "STRATEGIES",
    "ActiveConfig",
    "ActiveData",
    "BALDDropout",
    "BadgeSampling",
    "EntropySampling",
    "FView",
    "HView",
    "LabeledPool",
    "LeastConfidence",
    "MarginSampling",
    "QueryView",
    "RandomSampling",
    "Strategy",
    "backbone_outputs",
    "corrupted_set",
    "create_strategy",
    "gradient_embeddings",
    "history_table",
    "introspective_inputs",
    "kmeans_pp",
    "list_strategies",
    "load_active_data",
    "load_round",
    "make_view",
    "mc_dropout",
    "protocol_config",
    "register_strategy",
    "round_seed",
    "run_active",
    "run_active_learning",
]
