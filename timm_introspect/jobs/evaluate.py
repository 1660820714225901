"""``timm-introspect evaluate``: accuracy and calibration of f and H (``--model``), or of f alone (``--backbone``).

    timm-introspect evaluate --model runs/introspective --data uoft-cs/cifar10 --split test
    timm-introspect evaluate --backbone hf-hub:timm/resnet18.a1_in1k --data imagenet-val/ --split validation
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidArgumentError
from .args import backbone_args, data_args, deprecated, load, model_source, positive, print_metrics

__all__ = ["handle", "register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="accuracy and calibration of f and H")
    data_args(p)
    p.add_argument("--model", default=None, type=model_source,
                   help="folder or Hub repo (hf-hub:<repo>) of an introspective model")
    backbone_args(p, required=False, note="; evaluates f alone (instead of --model)")
    p.add_argument("--split", default="test")
    p.add_argument("--test-images", type=positive, default=None, help="a seeded subset of this many images")
    deprecated(p, "--limit", "--test-images", type=positive)
    p.add_argument("--out", default=None, help="metrics JSON (default: <model folder>/metrics-<split>.json)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> dict:
    from accelerate import Accelerator

    from ..data.outputs import prepare_output_file, write_json
    from ..io.backbones import HF_HUB_PREFIX, resolve_backbone
    from ..model.head import IntrospectiveHead
    from ..training.pipeline import evaluate, evaluate_backbone

    if (args.model is None) == (args.backbone is None):
        raise InvalidArgumentError("evaluate needs either --model (an introspective model) or --backbone (f alone)")
    if args.out is not None:  # a folder, a link or a read-only place: refused before evaluating
        args.out = str(prepare_output_file(args.out))
    accelerator = Accelerator()
    if args.model is not None:
        head = IntrospectiveHead.from_pretrained(args.model.removeprefix(HF_HUB_PREFIX))
        images = load(args, args.split, args.test_images)
        metrics = evaluate(head, images, batch_size=args.batch_size or 256, accelerator=accelerator,
                           workers=args.workers)
    else:
        model = resolve_backbone(args.backbone, args.checkpoint)
        metrics = evaluate_backbone(model, load(args, args.split, args.test_images),
                                    batch_size=args.batch_size or 256, accelerator=accelerator, workers=args.workers)
    where = args.model or args.backbone
    default_out = Path(where) / f"metrics-{args.split}.json" if Path(where).is_dir() else None
    out = Path(args.out) if args.out else default_out
    if accelerator.is_main_process:
        print_metrics(metrics)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json(out, {"data": args.data, "split": args.split, "metrics": metrics})
            print(f"metrics written to {out}")
    return metrics
