"""``timm-introspect ood``: every detector on f and H, vanilla and attacked, over OOD sets; prints the table.

    timm-introspect ood --model runs/introspective --ood ../shared/data/ood/dtd gaussian uniform cifar10c
    timm-introspect ood --model runs/introspective --ood gaussian --preset quick
"""

from __future__ import annotations

import argparse

from ...errors import InvalidArgumentError
from ...jobs.args import data_source, deprecated, model_source, positive
from ...training.recipes import OOD_PRESETS
from .benchmark import CONDITIONS, DETECTORS
from .data import BUILTIN_SETS
from .registry import list_detectors

__all__ = ["handle", "register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("ood", help="OOD detection: every detector on f and H, vanilla and attacked; prints "
                                          "the table")
    p.add_argument("--model", required=True, type=model_source,
                   help="folder or Hub repo (hf-hub:<repo>) of an introspective model")
    p.add_argument("--ood", nargs="+", required=True,
                   help=f"OOD sets: {', '.join(BUILTIN_SETS)} (cifar10c: severity 5; open-set: the classes a "
                        "class-subset model was not trained on), or a dataset folder / Hub id (e.g. "
                        "../shared/data/ood/dtd)")
    p.add_argument("--data", type=data_source, default=None, help="ID dataset (default: the one the model records)")
    p.add_argument("--split", default="test", help="ID test split")
    p.add_argument("--train-split", default="train", help="the split the feature detectors are fitted on")
    p.add_argument("--preset", choices=list(OOD_PRESETS), default="full",
                   help="subset sizes: " + "; ".join(
                       f"{name}: {s['id_images']} test, {s['ood_images']} per OOD set, {s['fit_images']} to fit"
                       for name, s in OOD_PRESETS.items()))
    deprecated(p, "--quick", "--preset quick", flag=True, const="quick")
    p.add_argument("--test-images", type=positive, default=None, help="ID test images (default: the preset's)")
    deprecated(p, "--id-images", "--test-images", type=positive)
    p.add_argument("--ood-images", type=positive, default=None, help="images per OOD set, at most (default: the "
                                                                      "preset's)")
    p.add_argument("--fit-images", type=positive, default=None, help="training images to fit detectors on "
                                                                      "(default: the preset's)")
    p.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS))
    p.add_argument("--ood-split", default="test", help="split of dataset OOD sets")
    p.add_argument("--ood-image-column", default=None, help="image column of dataset OOD sets (default: found)")
    p.add_argument("--ood-config", default=None, help="configuration of Hub OOD sets (e.g. cropped_digits for SVHN)")
    p.add_argument("--frost-dir", default=None, help="frost overlays, to include frost in cifar10c")
    p.add_argument("--detectors", nargs="+", choices=list_detectors(), default=list(DETECTORS),
                   help="the registered detectors to run, on f (*_f) and on H (*_h) (default: the benchmark's)")
    p.add_argument("--k", type=positive, default=50, help="KNN's neighbour")
    p.add_argument("--batch-size", type=positive, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for table.md, results.json, sets/*.json (default: print only)")
    p.add_argument("--plots", action="store_true", help="also write score histograms and ROC curves to --out")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> dict:
    from .job import run_ood

    if args.plots and not args.out:
        raise InvalidArgumentError("--plots needs --out (the folder the PNGs go to)")
    if args.out is not None:  # checked now, not after the whole benchmark ran
        from ...data.outputs import prepare_output

        args.out = prepare_output(args.out, "ood")
    sizes = dict(OOD_PRESETS[args.preset])
    given = dict(id_images=args.test_images, ood_images=args.ood_images, fit_images=args.fit_images)
    sizes.update({k: v for k, v in given.items() if v is not None})
    result = run_ood(
        args.model, args.ood, out=args.out, plots=args.plots, data=args.data, split=args.split,
        train_split=args.train_split, **sizes, conditions=args.conditions,
        quick=sizes == OOD_PRESETS["quick"], batch_size=args.batch_size, k=args.k, ood_split=args.ood_split,
        ood_image_column=args.ood_image_column, ood_config=args.ood_config, frost_dir=args.frost_dir, seed=args.seed,
        detectors=args.detectors,
    )
    print(result["table"])
    if args.out:
        print(f"written to {args.out}")
    return result
