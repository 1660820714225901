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

    python benchmarks/ood.py --model runs/quick/introspective --out runs/quick/ood --quick
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
from timm_introspect.cli import ood_arguments, ood_job_kwargs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LOCAL_SETS = [s for s in (str(SHARED / "ood" / "dtd"),) if Path(s).is_dir()] + ["gaussian", "uniform", "cifar10c"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ood_arguments(p, ood_default=LOCAL_SETS)
    p.add_argument("--out", required=True)
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    frost = SHARED / "cifar10c-frost"
    if args.frost_dir is None and frost.is_dir():
        args.frost_dir = str(frost)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from timm_introspect.apps.ood import run_ood

    try:
        result = run_ood(args.model, args.ood, out=args.out, plots=not args.no_plots, auto_open_set=True,
                         **ood_job_kwargs(args))
    except IntrospectionError as err:
        raise SystemExit(f"benchmarks/ood.py: error: {err}") from err
    print(result["table"])
    seconds = result["seconds"]
    print(json.dumps({k: round(v, 1) for k, v in seconds.items()}))
    print(f"{seconds['total_with_io']:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
