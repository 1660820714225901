"""f vs temperature-scaled f vs H on clean CIFAR-10 and CIFAR-10-C: accuracy and calibration.

For a saved introspective model, evaluates every corruption x severity (generated here, or read from the
official release layout with ``--cifar10c``) and the clean test set, for

    f       the backbone's softmax
    f+TS    f with temperature scaling, T fitted on held-out clean images (never on test images)
    H       the introspective network

and writes ``results.json``, ``results.md`` and three plots: accuracy vs ECE (paper Fig. 2),
accuracy per corruption (Fig. 3a), ECE vs severity per corruption (Fig. 3b / 8).

    python benchmarks/cifar10c.py --model runs/quick/introspective --data ../shared/data/cifar10 \\
        --frost-dir ../shared/data/cifar10c-frost --quick --out runs/quick/cifar10c
    python benchmarks/cifar10c.py --model runs/introspective --data uoft-cs/cifar10 \\
        --cifar10c CIFAR-10-C/ --out runs/cifar10c

``--cifar10c`` takes the release (folder or tar), a folder made by ``timm-introspect cifar10c``, or a Hub
dataset repo (``YashP54/cifar10-c``); without it the sets are generated here.

Held-out clean images for T: the ones the model records (``head.calibration``: f trained with
``--holdout``, H fitted on f's training images, as ``timm-introspect run --preset cpu`` does); a model
that records none is refused, since T must never see an image f or H trained on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from timm_introspect import IntrospectionError, IntrospectiveHead
from timm_introspect.cifar10c import CORRUPTIONS, load_cifar10c
from timm_introspect.data import load_images
from timm_introspect.plots import corruption_plots, pyplot
from timm_introspect.robustness import calibration_images, corruption_benchmark, summary_table

QUICK_CORRUPTIONS = ("gaussian_noise", "glass_blur", "contrast", "jpeg_compression")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder or Hub repo of an introspective model")
    p.add_argument("--data", default="uoft-cs/cifar10", help="CIFAR-10 (Hub id or local Parquet folder)")
    p.add_argument("--cifar10c", default=None,
                   help="CIFAR-10-C: release folder or tar, or a Hub dataset repo; default: generate it here")
    p.add_argument("--frost-dir", default=None, help="frost overlays, to generate 'frost'")
    p.add_argument("--corruptions", nargs="*", default=None)
    p.add_argument("--severities", nargs="*", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--limit", type=int, default=None, help="test images per set")
    p.add_argument("--quick", action="store_true", help=f"{len(QUICK_CORRUPTIONS)} corruptions, 500 images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    limit = args.limit or (500 if args.quick else None)
    corruptions = tuple(args.corruptions or (QUICK_CORRUPTIONS if args.quick else CORRUPTIONS))
    pyplot()  # matplotlib is there before any work starts
    t0 = time.perf_counter()
    head = IntrospectiveHead.from_pretrained(args.model).eval()
    try:
        calibration = calibration_images(head).arrays()
    except IntrospectionError as err:
        raise SystemExit(str(err)) from err
    sets = None
    if args.cifar10c:
        # the release's images are the test split in order; with --limit, the same seeded subset of image
        # numbers is taken from the clean split and from every severity block (splits may be sorted by class)
        official, official_labels = load_cifar10c(args.cifar10c, corruptions[:1])  # one corruption at a time
        clean, labels = load_images(args.data, "test").arrays()
        n = len(official_labels) // 5
        if len(labels) != n or not np.array_equal(labels, official_labels[:n]):
            raise SystemExit(f"{args.cifar10c} was not made from {args.data}'s test split in order (labels differ)")
        subset = np.sort(np.random.default_rng(args.seed).permutation(n)[: min(limit or n, n)])
        clean, labels = clean[subset], labels[subset]
        loaded = {"data": official}

        def sets(c: str, s: int) -> tuple[np.ndarray, np.ndarray]:
            if c not in loaded["data"]:  # only one corruption's 50,000 images in memory at a time
                loaded["data"], _ = load_cifar10c(args.cifar10c, (c,))
            rows = (s - 1) * n + subset
            return loaded["data"][c][rows], official_labels[rows]
    else:
        clean, labels = load_images(args.data, "test", limit=limit, seed=args.seed).arrays()
    results = corruption_benchmark(head, clean, labels, calibration, corruptions, args.severities, sets=sets,
                                   seed=args.seed, frost_dir=args.frost_dir, batch_size=args.batch_size)
    results.update(model=str(args.model), data=args.data, seconds=time.perf_counter() - t0)
    (out / "results.json").write_text(json.dumps(results, indent=2))  # before anything that can fail after it
    table = summary_table(results, ("accuracy", "ece", "mce", "nll", "brier"))
    lines = [f"# f vs f+TS vs H on CIFAR-10-C ({len(results['corrupted'])} sets of {len(clean)} images; "
             f"T = {results['temperature']:.3f})", "", table, "",
             "| corruption | severity | acc f | acc f+TS | acc H | ECE f | ECE f+TS | ECE H |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["corrupted"]:
        accs = " | ".join(f"{r[m]['accuracy']:.4f}" for m in ("f", "f+TS", "H"))
        eces = " | ".join(f"{r[m]['ece']:.4f}" for m in ("f", "f+TS", "H"))
        lines.append(f"| {r['corruption']} | {r['severity']} | {accs} | {eces} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    results["plots"] = corruption_plots(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(table)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, plots {', '.join(results['plots'])} "
          f"({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
