"""``timm-introspect run``: the main job (:func:`timm_introspect.jobs.main.run`) from a preset.

    timm-introspect run --data ../shared/data/cifar10 --preset quick --out runs/quick
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..training.recipes import PRESETS
from .args import augmix_arg, check_net_scale, data_args, load, loss_arg, net_args, positive, print_metrics

__all__ = ["handle", "register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="the main job: train f, fit H, evaluate f, f+TS and H (clean and "
                                          "CIFAR-10-C)")
    data_args(p)
    p.add_argument("--preset", choices=list(PRESETS), default="cpu", help="recipe (default: %(default)s)")
    loss_arg(p)
    net_args(p)
    augmix_arg(p)
    p.add_argument("--test-split", default="test")
    p.add_argument("--corruptions", nargs="*", default=None,
                   help="CIFAR-10-C corruptions to evaluate (default with --frost-dir: all 19; without: the 18 others)")
    p.add_argument("--frost-dir", default=None, help="folder with the frost overlays frost1.png ... frost5.jpg")
    p.add_argument("--corruption-images", type=positive, default=None,
                   help="seeded subset of test images the corrupted sets are made from (preset: 1000)")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from ..data.cifar10c import CORRUPTIONS
    from ..data.outputs import prepare_output
    from ..training.loop import Schedule
    from .corruptions import check_corruptions
    from .main import run

    args.out = prepare_output(args.out, "run", create=False)  # before any work: a wrong --out fails at once
    preset = PRESETS[args.preset]
    scale = args.scale or preset.get("scale", "maxabs")
    # an H on r_x's factors cannot take the preset's standardization: refused now, not after training f
    check_net_scale(args.net, scale)
    holdout = preset.get("holdout", 0.0)
    corruptions = args.corruptions
    if corruptions is None:
        corruptions = [c for c in CORRUPTIONS if c != "frost" or args.frost_dir] if holdout else []
    check_corruptions(corruptions, args.frost_dir)
    result = run(
        load(args, "train", preset["train_limit"]), load(args, args.test_split, preset["test_limit"]), args.out,
        preset["model"], preset["cifar_stem"], Schedule(**preset["backbone"]), Schedule(**preset["head"]),
        batch_size=args.batch_size or preset["batch_size"], seed=args.seed, loss=args.loss, net=args.net,
        scale=scale,
        workers=args.workers, limit=preset["train_limit"], holdout=holdout, corruptions=corruptions,
        corruption_images=args.corruption_images or preset.get("corruption_images", 1000), frost_dir=args.frost_dir,
        channels_last=preset.get("channels_last", False), augmix=args.augmix,
    )
    if PartialState().is_main_process:
        if "table" in result:
            print(result["table"])
            if "frost" not in corruptions and corruptions:
                print("(frost left out: pass --frost-dir to include it)")
        else:
            print_metrics(result["metrics"])
        times = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in result["times"].items())
        print(f"model: {Path(args.out) / 'introspective'}   metrics: {Path(args.out) / 'metrics.json'}   ({times})")
