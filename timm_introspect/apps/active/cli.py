"""``timm-introspect active``: one active-learning run, querying through f or through H (paper, Table 1).

    timm-introspect active --data ../shared/data/cifar10 --strategy badge --via H --preset cpu --out runs/badge-H
    # the BADGE code's per-round training: f and H until 99 % training accuracy, dropout only for BALD
    timm-introspect active --data ../shared/data/cifar10 --strategy badge --via H --preset cpu-badge --out runs/bb-H
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...jobs.args import MIXED_PRECISION, deprecated, non_negative, positive, scale_choices, warn
from ...training.recipes import ACTIVE_ALIASES, ACTIVE_PRESETS
from .config import DROPOUT_MODES
from .strategies import list_strategies

__all__ = ["handle", "register"]


def _preset(text: str) -> str:
    """A preset name; an old one (``smoke``) becomes the new one, with a warning."""
    if text in ACTIVE_ALIASES:
        warn("timm-introspect active", f"the preset {text!r} is deprecated, use {ACTIVE_ALIASES[text]!r}")
        return ACTIVE_ALIASES[text]
    return text


def _accuracy(text: str) -> float:
    """A training accuracy to reach: a number in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("active", help="active learning: query through f or through H (paper, Table 1)")
    p.add_argument("--data", default="uoft-cs/cifar10", help="Hub dataset id or local folder (Parquet / images)")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--strategy", choices=list_strategies(), required=True)
    p.add_argument("--via", choices=["f", "H"], default="f", help="query through f or through H")
    p.add_argument("--preset", type=_preset, choices=list(ACTIVE_PRESETS), default="cpu",
                   help="paper: ResNet-18, 100 + 1000 x 20 (GPU); cpu: resnet10s_cifar, 100 + 400 x 5; cpu-badge: "
                        "cpu trained as the BADGE code (until 99 %% training accuracy, no augmentation, dropout only "
                        "for BALD); quick: a minute-long check (default: %(default)s)")
    deprecated(p, "--protocol", "--preset", type=_preset, choices=list(ACTIVE_PRESETS))
    p.add_argument("--seed", type=int, default=0, help="initial labels, training, dropout masks, the strategy's draws")
    p.add_argument("--data-seed", type=int, default=0, help="the pool and test subsets and the Gaussian noise")
    p.add_argument("--pool-images", type=positive, default=None,
                   help="the pool: a seeded subset of this many training images (default: the preset's)")
    deprecated(p, "--pool", "--pool-images", type=positive)
    p.add_argument("--test-images", type=positive, default=None,
                   help="a seeded subset of this many test images (default: the preset's)")
    deprecated(p, "--test", "--test-images", type=positive)
    p.add_argument("--noise", choices=["all", "spread", "none"], default=None,
                   help="Gaussian noise: all 5 severities per test image, one severity per image, or none")
    p.add_argument("--initial", type=positive, default=None, help="random labels before the first round")
    p.add_argument("--query-size", type=positive, default=None, help="images queried per round")
    p.add_argument("--rounds", type=non_negative, default=None, help="query rounds")
    p.add_argument("--reset", action=argparse.BooleanOptionalAction, default=None,
                   help="re-initialize f every round (default, as the BADGE code) or continue from the last round")
    p.add_argument("--arch", default=None, help="timm architecture for 32 px input (default: the preset's)")
    deprecated(p, "--model", "--arch")
    p.add_argument("--epochs", type=positive, default=None, help="f's epochs per round (at least --min-steps steps)")
    p.add_argument("--min-steps", type=non_negative, default=None)
    p.add_argument("--until-train-accuracy", type=_accuracy, default=None,
                   help="train f and H each round until this accuracy on the labeled set (BADGE: 0.99), at most "
                        "--max-epochs / --head-max-epochs epochs (default: the preset's; cpu-badge: 0.99)")
    p.add_argument("--max-epochs", type=positive, default=None,
                   help="f's most epochs a round with --until-train-accuracy")
    p.add_argument("--head-max-epochs", type=positive, default=None, help="H's, likewise")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="f trains on randomly cropped and flipped images, or on the images as they are (default: the "
                        "preset's; cpu-badge: as they are, as the BADGE code)")
    p.add_argument("--dropout", choices=DROPOUT_MODES, default=None,
                   help="always: f and H keep their dropout for every strategy; bald: only where BALD samples it "
                        "(default: the preset's; cpu-badge: bald)")
    p.add_argument("--batch-size", type=positive, default=None)
    p.add_argument("--mc-passes", type=positive, default=None, help="BALD's Monte Carlo dropout passes")
    p.add_argument("--scale", choices=scale_choices(), default=None,
                   help="r_x scaling before H (default: the paper's maxabs)")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> dict:
    from .job import history_table, run_active

    result = run_active(
        args.data, args.out, args.strategy, args.via, protocol=args.preset, seed=args.seed, pool=args.pool_images,
        test=args.test_images, noise=args.noise, data_seed=args.data_seed, image_column=args.image_column,
        label_column=args.label_column, initial=args.initial, query_size=args.query_size, rounds=args.rounds,
        reset=args.reset, model=args.arch, epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size,
        mc_passes=args.mc_passes, mixed_precision=args.mixed_precision, scale=args.scale,
        until_train_accuracy=args.until_train_accuracy, max_epochs=args.max_epochs,
        head_max_epochs=args.head_max_epochs, dropout=args.dropout, augment=args.augment,
    )
    print(history_table(result))
    print(f"rounds: {Path(args.out) / 'rounds'}   result: {Path(args.out) / 'result.json'}")
    return result
