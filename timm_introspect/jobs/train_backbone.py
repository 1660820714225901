"""``timm-introspect train-backbone``: train f, a timm classifier, from scratch.

    timm-introspect train-backbone --data uoft-cs/cifar10 --arch resnet18 --cifar-stem --out runs/f
"""

from __future__ import annotations

import argparse

from ..training.recipes import PRESETS
from .args import data_args, deprecated, fraction, load, schedule, train_args

__all__ = ["handle", "register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("train-backbone", help="train f, a timm classifier, from scratch")
    data_args(p)
    train_args(p, PRESETS)
    p.add_argument("--arch", default=None, help="timm architecture (default: the preset's)")
    deprecated(p, "--model", "--arch")
    p.add_argument("--cifar-stem", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--holdout", type=fraction, default=0.0,
                   help="train f without this fraction of the training images, kept for `fit --use-holdout`")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    from ..data.outputs import prepare_output
    from ..training.pipeline import train_backbone

    args.out = prepare_output(args.out, "backbone", create=False)  # before any data: a wrong --out fails at once
    preset = PRESETS[args.preset]
    limit = args.train_images or preset["train_limit"]
    train = load(args, args.train_split, limit)
    train_backbone(
        train, args.out, model_name=args.arch or preset["model"],
        cifar_stem=preset["cifar_stem"] if args.cifar_stem is None else args.cifar_stem,
        schedule=schedule(preset, "backbone", args), batch_size=args.batch_size or preset["batch_size"],
        seed=args.seed, mixed_precision=args.mixed_precision, workers=args.workers, holdout=args.holdout, limit=limit,
    )
