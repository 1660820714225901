"""``timm-introspect cifar10c`` and ``imagenetc``: generate the corruption benchmarks in their releases' layouts.

    timm-introspect cifar10c --data uoft-cs/cifar10 --frost-dir frost/ --out CIFAR-10-C
    timm-introspect imagenetc --data imagenet-val/ --split validation --frost-dir frost/ --out ImageNet-C
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import InvalidArgumentError
from .args import data_source, deprecated, load, positive, severity

__all__ = ["check_corruptions", "handle_cifar10c", "handle_imagenetc", "register"]


def _common(p: argparse.ArgumentParser, data_help: str, split: str) -> None:
    p.add_argument("--data", type=data_source, **data_help)
    p.add_argument("--split", default=split)
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--frost-dir", default=None, help="folder with the frost overlays frost1.png ... frost5.jpg")
    p.add_argument("--corruptions", nargs="*", default=None, help="default: all 19")


def _subset(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--test-images", type=positive, default=None, help=f"only this many {what} (seeded subset)")
    deprecated(p, "--limit", "--test-images", type=positive)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)


def register(subparsers) -> None:
    p = subparsers.add_parser("cifar10c", help="generate CIFAR-10-C (19 corruptions x 5 severities) in the release's "
                                               "layout")
    _common(p, dict(default="uoft-cs/cifar10", help="CIFAR-10 (Hub dataset id or local folder)"), "test")
    _subset(p, "test images")
    p.set_defaults(handler=handle_cifar10c)
    p = subparsers.add_parser("imagenetc", help="generate ImageNet-C (resize 256, crop 224, the ImageNet parameters) "
                                                "in the release's layout <corruption>/<severity>/<wnid>/<file>.JPEG")
    _common(p, dict(required=True, help="ImageNet validation images (Hub dataset id or local folder)"), "validation")
    p.add_argument("--severities", nargs="+", type=severity, default=[1, 2, 3, 4, 5], help="some of 1..5")
    _subset(p, "images")
    p.set_defaults(handler=handle_imagenetc)


def check_corruptions(corruptions: Sequence[str], frost_dir: str | None) -> None:
    """Refuse unknown corruption names, and frost without its overlay images, before any work."""
    from ..data.cifar10c import CORRUPTIONS

    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise InvalidArgumentError(f"unknown corruption(s) {', '.join(unknown)}; choose from {', '.join(CORRUPTIONS)}")
    if "frost" in corruptions and not frost_dir:
        raise InvalidArgumentError("frost needs its overlay images: pass --frost-dir (a folder with frost1.png ... "
                                   "frost5.jpg), or leave frost out with --corruptions")


def handle_cifar10c(args: argparse.Namespace) -> dict:
    from ..data.cifar10c import CORRUPTIONS, write_official
    from ..data.outputs import prepare_output

    args.out = prepare_output(args.out, "cifar10c")  # before any image is decoded
    corruptions = tuple(args.corruptions or CORRUPTIONS)
    check_corruptions(corruptions, args.frost_dir)
    pixels, labels = load(args, args.split, args.test_images).arrays()
    start = time.perf_counter()
    written = write_official(args.out, pixels, labels, corruptions, seed=args.seed, frost_dir=args.frost_dir)
    written.update(data=args.data, split=args.split, images=len(pixels), seed=args.seed,
                   total_seconds=time.perf_counter() - start)
    return _report(args, written, f"{len(corruptions)} corruptions x 5 severities x {len(pixels)} images",
                   " (md5 sums in generation.json)")


def handle_imagenetc(args: argparse.Namespace) -> dict:
    from ..data.cifar10c import CORRUPTIONS, imagenet_preprocess, write_imagenet_c
    from ..data.outputs import prepare_output

    args.out = prepare_output(args.out, "imagenetc")  # before any image is decoded
    if len(set(args.severities)) != len(args.severities):
        raise InvalidArgumentError(f"--severities names a severity twice: {args.severities}")
    corruptions = tuple(args.corruptions or CORRUPTIONS)
    check_corruptions(corruptions, args.frost_dir)
    images = load(args, args.split, args.test_images)
    pixels, labels = images.arrays(resize=imagenet_preprocess)
    # class folders: the dataset's class names (ImageNet's are wnids on the Hub's imagenet-1k), else numbers
    start = time.perf_counter()
    written = write_imagenet_c(args.out, pixels, labels, classes=images.label_names, corruptions=corruptions,
                               severities=args.severities, seed=args.seed, frost_dir=args.frost_dir)
    written.update(data=args.data, split=args.split, seed=args.seed, total_seconds=time.perf_counter() - start)
    return _report(args, written, f"{len(corruptions)} corruptions x {len(args.severities)} severities x "
                                  f"{len(pixels)} images")


def _report(args: argparse.Namespace, written: dict, what: str, extra: str = "") -> dict:
    """Write ``generation.json`` and print the seconds per corruption of a corruption generator."""
    from ..data.outputs import write_json

    write_json(Path(args.out, "generation.json"), written)  # never through a link planted in --out
    for name, sec in written["seconds"].items():
        print(f"{name:18s} {sec:7.1f} s")
    if written["reused"]:
        print(f"kept from an earlier run with the same images and seed: {', '.join(written['reused'])}")
    print(f"{what} in {written['total_seconds']:.0f} s -> {args.out}{extra}")
    return written
