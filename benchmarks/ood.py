"""OOD detection with f and with H: every detector, every OOD set, vanilla and under attack.

For a saved introspective model, fits the feature detectors on training images, then scores the ID test
images and each OOD set under three conditions (vanilla; L-inf PGD against f, the paper's setting; the same
PGD against H, adaptively through r_x) with

    classic (pytorch-ood, on f)   MSP, MaxLogit, Energy, ODIN, GradNorm, ReAct, Mahalanobis, KNN, ViM
    introspective (on H)          MSP, MaxLogit, Energy, ODIN (perturbation through f, r_x, scaling, H),
                                  GradNorm, Mahalanobis / KNN / ViM on H's hidden layers, KNN on r_x

and writes ``table.md`` (both conventions: ID positive as in the paper, OOD positive as in pytorch-ood /
OpenOOD, plus the paper's claims as measured), ``full_table.md`` (all five metrics), ``results.json``,
``sets/<set>.json`` and, in ``plots/``, score histograms and ROC curves.

    python benchmarks/ood.py --model runs/quick/introspective --out runs/quick/ood --preset quick
    python benchmarks/ood.py --model runs/cpu/introspective --out runs/cpu/ood

Default OOD sets: every local one: DTD (``../shared/data/ood/dtd``), Gaussian and uniform noise, CIFAR-10-C at
severity 5 (with frost when ``../shared/data/cifar10c-frost`` exists), and the open-set split when the model
was trained on a class subset (CIFAR-6/4).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from timm_introspect import IntrospectionError
from timm_introspect.apps.ood import CONDITIONS, run_ood
from timm_introspect.data.outputs import prepare_output
from timm_introspect.jobs.args import OneLineParser, deprecated, positive, run_script
from timm_introspect.training.recipes import OOD_PRESETS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LOCAL_SETS = [s for s in (str(SHARED / "ood" / "dtd"),) if Path(s).is_dir()] + ["gaussian", "uniform", "cifar10c"]


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder or Hub repo (hf-hub:<repo>) of an introspective model")
    p.add_argument("--ood", nargs="+", default=LOCAL_SETS,
                   help="OOD sets: gaussian, uniform, cifar10c (severity 5), open-set, or a dataset folder / Hub id "
                        f"(default: {' '.join(LOCAL_SETS)})")
    p.add_argument("--data", default=None, help="ID dataset (default: the one the model records)")
    p.add_argument("--split", default="test", help="ID test split")
    p.add_argument("--train-split", default="train", help="the split the feature detectors are fitted on")
    p.add_argument("--preset", choices=list(OOD_PRESETS), default="full", help="subset sizes (quick: minutes)")
    deprecated(p, "--quick", "--preset quick", flag=True, const="quick")
    p.add_argument("--test-images", type=positive, default=None, help="ID test images (default: the preset's)")
    deprecated(p, "--id-images", "--test-images", type=positive)
    p.add_argument("--ood-images", type=positive, default=None, help="images per OOD set (default: the preset's)")
    p.add_argument("--fit-images", type=positive, default=None, help="images to fit detectors on (default: the "
                                                                      "preset's)")
    p.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS))
    p.add_argument("--ood-split", default="test", help="split of dataset OOD sets")
    p.add_argument("--ood-image-column", default=None, help="image column of dataset OOD sets (default: found)")
    p.add_argument("--ood-config", default=None, help="configuration of Hub OOD sets (e.g. cropped_digits for SVHN)")
    p.add_argument("--frost-dir", default=None, help="frost overlays, to include frost in cifar10c")
    p.add_argument("--k", type=positive, default=50, help="KNN's neighbour")
    p.add_argument("--batch-size", type=positive, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    frost = SHARED / "cifar10c-frost"
    if args.frost_dir is None and frost.is_dir():
        args.frost_dir = str(frost)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out = str(prepare_output(args.out, "ood"))  # before any work, not after the benchmark ran
    sizes = dict(OOD_PRESETS[args.preset])
    given = dict(id_images=args.test_images, ood_images=args.ood_images, fit_images=args.fit_images)
    sizes.update({k: v for k, v in given.items() if v is not None})
    try:
        result = run_ood(args.model, args.ood, out=args.out, plots=not args.no_plots, auto_open_set=True,
                         data=args.data, split=args.split, train_split=args.train_split, **sizes,
                         conditions=args.conditions, quick=sizes == OOD_PRESETS["quick"], batch_size=args.batch_size,
                         k=args.k, ood_split=args.ood_split, ood_image_column=args.ood_image_column,
                         ood_config=args.ood_config, frost_dir=args.frost_dir, seed=args.seed)
    except IntrospectionError as err:
        raise SystemExit(f"benchmarks/ood.py: error: {err}") from err
    print(result["table"])
    seconds = result["seconds"]
    print(json.dumps({k: round(v, 1) for k, v in seconds.items()}))
    print(f"{seconds['total_with_io']:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
