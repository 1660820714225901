"""``timm-introspect fit``: fit H on f's introspective features.

    timm-introspect fit --backbone runs/f --data uoft-cs/cifar10 --loss mse-M --out runs/introspective
    timm-introspect fit --backbone runs/f --data uoft-cs/cifar10 --augmix 1 --out runs/introspective-augmix
    timm-introspect fit --backbone hf-hub:timm/resnet18.a1_in1k --data imagenet-folder/ --net factorized --out runs/in1k
"""

from __future__ import annotations

import argparse

from ..training.recipes import PRESETS
from .args import augmix_arg, backbone_args, check_net_scale, data_args, load, loss_arg, net_args, schedule, train_args

__all__ = ["handle", "register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("fit", help="fit H on f's introspective features")
    data_args(p)
    train_args(p, PRESETS)
    backbone_args(p, required=True)
    loss_arg(p)
    p.add_argument("--cache-dir", default=None, help="feature cache (default: <out>/feature-cache)")
    p.add_argument("--use-holdout", action="store_true",
                   help="fit H on the images f did not see (train-backbone --holdout; paper Fig. 10)")
    net_args(p)
    augmix_arg(p)
    p.add_argument("--out", required=True)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    from ..data.outputs import prepare_output
    from ..io.backbones import resolve_backbone
    from ..training.pipeline import check_backbone_data, fit_head, heldout_images

    args.out = prepare_output(args.out, "introspective", create=False)  # before any work: a wrong --out fails at once
    preset = PRESETS[args.preset]
    scale = args.scale or preset.get("scale", "maxabs")
    check_net_scale(args.net, scale)  # before f and the data: an H on factors takes no standardization
    backbone = resolve_backbone(args.backbone, args.checkpoint)  # before any data: a bad f fails at once
    limit = args.train_images or preset["train_limit"]
    train = load(args, args.train_split, limit)
    if args.use_holdout:
        train = heldout_images(args.backbone, train, args.train_split, limit, args.seed)
    check_backbone_data(args.backbone, train)  # f's own classes and columns, before any extraction
    fit_head(
        backbone, train, args.out, loss=args.loss, schedule=schedule(preset, "head", args),
        batch_size=args.batch_size or preset["batch_size"], seed=args.seed, cache_dir=args.cache_dir,
        mixed_precision=args.mixed_precision, workers=args.workers, net=args.net,
        scale=scale, augmix=args.augmix,
    )
