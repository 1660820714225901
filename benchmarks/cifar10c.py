"""f vs temperature-scaled f vs H on clean and corrupted images (CIFAR-10-C or ImageNet-C): accuracy, calibration.

For a saved introspective model, evaluates every corruption x severity (generated here from the clean
test images, or read from a release with ``--corrupted``) and the clean test set, for

    f       the backbone's softmax
    f+TS    f with temperature scaling, T fitted on held-out clean images (never on test images)
    H       the introspective network

and writes ``results.json``, ``results.md`` and three plots: accuracy vs ECE (paper Fig. 2),
accuracy per corruption (Fig. 3a), ECE vs severity per corruption (Fig. 3b / 8).

    python benchmarks/cifar10c.py --model runs/quick/introspective --data ../shared/data/cifar10 \\
        --frost-dir ../shared/data/cifar10c-frost --preset quick --out runs/quick/cifar10c
    python benchmarks/cifar10c.py --model runs/introspective --data uoft-cs/cifar10 \\
        --corrupted CIFAR-10-C/ --out runs/cifar10c
    python benchmarks/cifar10c.py --dataset imagenetc --model runs/in1k --data imagenet-val/ --split validation \\
        --calibration-holdout 0.2 --test-images 1000 --frost-dir frost/ --out runs/imagenetc

``--dataset cifar10c`` (default): 32 px images as they are, the CIFAR generator's parameters;
``--corrupted`` takes the release (folder or tar), a folder made by ``timm-introspect cifar10c``, or a Hub
dataset repo (``YashP54/cifar10-c``), whose images are the test split in order.

``--dataset imagenetc``: the clean images go through the ImageNet generator's preprocessing (resize 256,
center crop 224) and are corrupted with its parameters; f must take 224 px inputs (its mean and std are
used). ``--corrupted`` takes ImageNet-C in the release's layout (``<corruption>/<severity>/<wnid>/...``,
e.g. made by ``write_imagenet_c``; labels are each wnid's index among the sorted wnids, ImageNet-1k's class
order), or rows / a Hub repo (:func:`~timm_introspect.data.cifar10c.load_imagenet_c`); with ``--test-images`` the same
seeded subset of positions is taken from every set, and an independent one from the clean split.

Held-out clean images for T: the ones the model records (``head.calibration``: f trained with
``--holdout``, H fitted on f's training images, as ``timm-introspect run --preset cpu`` does). A model that
records none (e.g. a pretrained ImageNet f) needs ``--calibration-holdout FRACTION``: T is fitted on that
seeded share of the test split, and only the rest is evaluated (and corrupted). T never sees an image it
is evaluated on, nor one f or H trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from timm_introspect import IntrospectionError, IntrospectiveHead
from timm_introspect.data.cifar10c import CORRUPTIONS, imagenet_preprocess, load_cifar10c, load_imagenet_c
from timm_introspect.data.images import load_images
from timm_introspect.data.outputs import prepare_output
from timm_introspect.io.backbones import HF_HUB_PREFIX
from timm_introspect.jobs.args import OneLineParser, deprecated, positive, run_script, severity
from timm_introspect.jobs.plots import corruption_plots, pyplot
from timm_introspect.jobs.robustness import calibration_images, corruption_benchmark, summary_table, training_images

QUICK_CORRUPTIONS = ("gaussian_noise", "glass_blur", "contrast", "jpeg_compression")
GENERATOR = {"cifar10c": "cifar10", "imagenetc": "imagenet"}  # --dataset -> the parameters corrupt() uses
TITLE = {"cifar10c": "CIFAR-10-C", "imagenetc": "ImageNet-C"}


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder or Hub repo (hf-hub:<repo>) of an introspective model")
    p.add_argument("--dataset", choices=list(GENERATOR), default="cifar10c", help="which corruption benchmark")
    p.add_argument("--data", default="uoft-cs/cifar10", help="the clean images (Hub id or local folder)")
    p.add_argument("--split", default="test", help="the clean test split (ImageNet: validation)")
    p.add_argument("--corrupted", "--cifar10c", dest="corrupted", default=None,
                   help="the corrupted sets: a release (folder, tar or Hub dataset repo); default: generate them here")
    p.add_argument("--frost-dir", default=None, help="frost overlays, to generate 'frost'")
    p.add_argument("--corruptions", nargs="*", default=None)
    p.add_argument("--severities", nargs="+", type=severity, default=[1, 2, 3, 4, 5])
    p.add_argument("--test-images", type=positive, default=None, help="test images per set (a seeded subset)")
    deprecated(p, "--limit", "--test-images", type=positive)
    p.add_argument("--calibration-holdout", type=float, default=None,
                   help="for a model that records no held-out images: fit T on this seeded fraction of the test "
                        "split and evaluate the rest")
    p.add_argument("--preset", choices=["full", "quick"], default="full",
                   help=f"quick: {len(QUICK_CORRUPTIONS)} corruptions, 500 images")
    deprecated(p, "--quick", "--preset quick", flag=True, const="quick")
    p.add_argument("--batch-size", type=positive, default=256)
    p.add_argument("--no-dac", action="store_true",
                   help="leave DAC out (it needs f's training images, rebuilt from the model's record)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.calibration_holdout is not None and not 0 < args.calibration_holdout < 1:
        p.error(f"--calibration-holdout must be in (0, 1), got {args.calibration_holdout}")
    return args


def clean_arrays(args, head: IntrospectiveHead, limit: int | None):
    """The clean test images as f sees them before normalization (ImageNet-C: the generator's 224 px crops),
    their labels, and the held-out images for T: ``(clean, labels, (cal_images, cal_labels))``; ``limit``: a
    seeded subset of the test split."""
    test = load_images(args.data, args.split, limit=limit, seed=args.seed)
    pixels = (lambda images: images.arrays(resize=imagenet_preprocess)) if args.dataset == "imagenetc" \
        else (lambda images: images.arrays(head.model))
    if head.calibration:
        if args.calibration_holdout is not None:
            raise SystemExit("this model records its own held-out images for T: drop --calibration-holdout")
        return (*pixels(test), pixels(calibration_images(head)))
    if args.calibration_holdout is None:
        try:
            calibration_images(head)
        except IntrospectionError as err:
            raise SystemExit(f"{err}; or, for a model trained elsewhere, pass --calibration-holdout 0.2 to fit T on "
                             "a seeded share of the test split (and evaluate the rest)") from err
    rest, held = test.split_holdout(args.calibration_holdout, seed=args.seed)
    return (*pixels(rest), pixels(held))


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = prepare_output(args.out, "benchmark")  # before any work
    out.mkdir(parents=True, exist_ok=True)
    quick = args.preset == "quick"
    limit = args.test_images or (500 if quick else None)
    corruptions = tuple(args.corruptions or (QUICK_CORRUPTIONS if quick else CORRUPTIONS))
    pyplot()  # matplotlib is there before any work starts
    t0 = time.perf_counter()
    head = IntrospectiveHead.from_pretrained(args.model.removeprefix(HF_HUB_PREFIX)).eval()
    sets = None
    cifar_release = args.corrupted and args.dataset == "cifar10c"
    clean, labels, calibration = clean_arrays(args, head, None if cifar_release else limit)
    if cifar_release:
        # the release's images are the test split in order; with --test-images, the same seeded subset of image
        # numbers is taken from the clean split and from every severity block (splits may be sorted by class)
        if args.calibration_holdout is not None:
            raise SystemExit("--calibration-holdout takes test images for T, which the CIFAR-10-C release also "
                             "holds: use a model that records held-out images (train-backbone --holdout)")
        official, official_labels = load_cifar10c(args.corrupted, corruptions[:1])  # one corruption at a time
        n = len(official_labels) // 5
        if len(labels) != n or not np.array_equal(labels, official_labels[:n]):
            raise SystemExit(f"{args.corrupted} was not made from {args.data}'s test split in order (labels differ)")
        subset = np.sort(np.random.default_rng(args.seed).permutation(n)[: min(limit or n, n)])
        clean, labels = clean[subset], labels[subset]
        loaded = {"data": official}

        def sets(c: str, s: int) -> tuple[np.ndarray, np.ndarray]:
            if c not in loaded["data"]:  # only one corruption's 50,000 images in memory at a time
                loaded["data"], _ = load_cifar10c(args.corrupted, (c,))
            rows = (s - 1) * n + subset
            return loaded["data"][c][rows], official_labels[rows]
    elif args.corrupted:  # ImageNet-C: every <corruption>/<severity> folder holds the same files, in one order
        def sets(c: str, s: int) -> tuple[np.ndarray, np.ndarray]:
            # labels: the index of each wnid among the sorted ones, ImageNet-1k's class order (ImageFolder's)
            return load_imagenet_c(args.corrupted, c, s, limit=limit, seed=args.seed)  # decodes only those
    training = None  # DAC's k-NN densities need f's training images: those the model records, at f's size
    if args.calibration_holdout is None and not args.no_dac:
        training = training_images(head).arrays(model=head.model)[0]
        if training.shape[1:3] != clean.shape[1:3]:
            training = None
    results = corruption_benchmark(head, clean, labels, calibration, corruptions, args.severities, sets=sets,
                                   seed=args.seed, frost_dir=args.frost_dir, batch_size=args.batch_size,
                                   dataset=GENERATOR[args.dataset], training=training)
    results.update(model=str(args.model), data=args.data, split=args.split, dataset=args.dataset,
                   sets_from=args.corrupted or "generated", seconds=time.perf_counter() - t0)
    (out / "results.json").write_text(json.dumps(results, indent=2))  # before anything that can fail after it
    table = summary_table(results, ("accuracy", "ece", "mce", "nll", "brier"))
    models = results["models"]
    lines = [f"# {' vs '.join(models)} on {TITLE[args.dataset]} ({len(results['corrupted'])} sets of {len(clean)} "
             f"images; T = {results['temperature']:.3f})", "", table, "",
             "| corruption | severity | " + " | ".join(f"acc {m}" for m in models) + " | "
             + " | ".join(f"ECE {m}" for m in models) + " |", "| --- | --- |" + " --- |" * (2 * len(models))]
    for r in results["corrupted"]:
        accs = " | ".join(f"{r[m]['accuracy']:.4f}" for m in models)
        eces = " | ".join(f"{r[m]['ece']:.4f}" for m in models)
        lines.append(f"| {r['corruption']} | {r['severity']} | {accs} | {eces} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    results["plots"] = corruption_plots(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(table)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, plots {', '.join(results['plots'])} "
          f"({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    sys.exit(run_script(main))
