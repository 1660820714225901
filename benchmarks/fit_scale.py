"""H at ImageNet scale: peak memory and images per second of ``timm-introspect fit --net factorized``.

f is a timm ``resnet50`` (or ``--arch``) with random weights and 1,000 classes, saved in timm's layout
(config.json + model.safetensors). The data are ``--train-images`` CIFAR-10 test images upscaled to 256x256 px
and stored as JPEG in a Parquet dataset with 1,000 class names and seeded random labels (what is measured
is the cost per image, which does not depend on what the pixels show); f's own data config preprocesses
them (resize 256, center crop 224). The CLI runs twice, each time as its own process:

    1. ``fit --net factorized``: r_x's factors streamed to the cache (plus, for a "-M" loss, one pass for
       M first), then H's epochs;
    2. the same into another folder, reusing run 1's cache: H's epochs alone;
    3. as 2 with ``--extra-epochs`` more: (run 3 - run 2) is H's time for those epochs, without start-up.

The report gives each run's wall time and peak resident memory (the process's own ``ru_maxrss``),
the extraction's images/s ((run 1 - run 2) for the passes over the images), H's images/s ((run 3 -
run 2)), and the
cache's bytes per image next to materialized r_x's (N d floats).

    python benchmarks/fit_scale.py --data ../shared/data/cifar10 --train-images 1000 --out runs/fit-scale
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from timm_introspect.data.outputs import prepare_output
from timm_introspect.jobs.args import OneLineParser, deprecated, non_negative, positive, run_script

WRAPPER = ("import atexit, resource, sys; from timm_introspect.cli import main; "
           "atexit.register(lambda: print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
           "file=sys.stderr)); main(sys.argv[1:])")


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/cifar10", help="CIFAR-10 (local Parquet folder or Hub id)")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--num-classes", type=positive, default=1000)
    p.add_argument("--train-images", type=positive, default=1000, help="images H is fitted on")
    deprecated(p, "--images", "--train-images", type=positive)
    p.add_argument("--epochs", type=positive, default=2, help="H's epochs in runs 1 and 2")
    p.add_argument("--extra-epochs", type=non_negative, default=100, help="run 3's epochs beyond run 2's (H's speed)")
    p.add_argument("--batch-size", type=positive, default=64)
    p.add_argument("--loss", default="mse-M", help="the CLI's default; an '-M' loss adds one forward pass for M")
    p.add_argument("--threads", type=positive, default=None, help="torch threads (default: all cores)")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def make_dataset(data: str, n: int, num_classes: int, folder: Path) -> None:
    import datasets
    from PIL import Image

    from timm_introspect.data.images import load_images

    images, _ = load_images(data, "test", limit=n, seed=0).arrays()
    rows = []
    for arr in images:
        buf = io.BytesIO()
        Image.fromarray(arr).resize((256, 256), Image.BICUBIC).save(buf, "JPEG", quality=90)
        rows.append({"bytes": buf.getvalue(), "path": None})
    labels = np.random.default_rng(0).integers(0, num_classes, size=len(rows)).tolist()
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[f"class_{i:04d}" for i in range(num_classes)])})
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict({"image": rows, "label": labels}, features=features).to_parquet(
        str(folder / "train-00000-of-00001.parquet"))


def run_fit(args, backbone: Path, data: Path, out: Path, cache: Path, epochs: int) -> dict:
    cmd = [sys.executable, "-c", WRAPPER, "fit", "--backbone", str(backbone), "--data", str(data), "--net",
           "factorized", "--loss", args.loss, "--epochs", str(epochs), "--batch-size", str(args.batch_size),
           "--cache-dir", str(cache), "--out", str(out)]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"fit failed:\n{proc.stderr[-4000:]}")
    peak = [float(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_MB")][-1]
    return {"wall_s": wall, "peak_rss_mb": peak, "command": " ".join(cmd[3:])}


def main(argv=None) -> dict:
    import timm

    from timm_introspect.io.hub import save_backbone

    args = parse_args(argv)
    out = prepare_output(args.out, "benchmark")  # before any work
    data, backbone = out / "data", out / "backbone"
    if not (data / "train-00000-of-00001.parquet").is_file():
        make_dataset(args.data, args.train_images, args.num_classes, data)
    torch.manual_seed(0)
    f = timm.create_model(args.arch, num_classes=args.num_classes)
    save_backbone(f.eval(), backbone)
    num, dim = f.get_classifier().weight.shape
    for name in ("run1", "run2", "run3", "cache"):
        if (out / name).exists():
            raise SystemExit(f"{out / name} exists: use a new --out (the runs must start cold)")
    first = run_fit(args, backbone, data, out / "run1", out / "cache", args.epochs)
    second = run_fit(args, backbone, data, out / "run2", out / "cache", args.epochs)
    third = run_fit(args, backbone, data, out / "run3", out / "cache", args.epochs + args.extra_epochs)
    (entry,) = [p for p in (out / "cache").iterdir() if (p / "meta.json").is_file()]
    cache_bytes = (entry / "features.safetensors").stat().st_size
    passes = 2 if args.loss.endswith("-M") else 1
    extract_s = first["wall_s"] - second["wall_s"]
    result = {
        "arch": args.arch, "num_classes": num, "feature_dim": dim, "images": args.train_images, "epochs": args.epochs,
        "batch_size": args.batch_size, "loss": args.loss, "passes_over_images": passes,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "run1_fit": first, "run2_fit_cached": second, "run3_fit_cached_twice_the_epochs": third,
        "extraction_s": extract_s, "extraction_images_per_s": passes * args.train_images / extract_s,
        "h_images_per_s": args.extra_epochs * args.train_images / (third["wall_s"] - second["wall_s"]),
        "cache_bytes_per_image": cache_bytes / args.train_images,
        "materialized_bytes_per_image": num * dim * 4,
    }
    lines = [
        f"# `fit --net factorized` at ImageNet scale: {args.arch}, {num} classes, d = {dim}", "",
        f"Command: `python benchmarks/fit_scale.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"Machine: {result['machine']}; {args.train_images} images (upscaled CIFAR-10, 256 px JPEG, f's preprocessing "
        f"to 224), batch {args.batch_size}, loss {args.loss} ({passes} pass(es) of f over the images), "
        f"{args.epochs} epochs of H.", "",
        "| run | wall (s) | peak RSS (MB) |", "| --- | --- | --- |",
        f"| 1: extraction + H | {first['wall_s']:.1f} | {first['peak_rss_mb']:.0f} |",
        f"| 2: H on run 1's cache | {second['wall_s']:.1f} | {second['peak_rss_mb']:.0f} |",
        f"| 3: as 2, {args.epochs + args.extra_epochs} epochs | {third['wall_s']:.1f} | {third['peak_rss_mb']:.0f} |",
        "",
        f"- extraction (run 1 - run 2): {extract_s:.1f} s, {result['extraction_images_per_s']:.1f} images/s per pass "
        "(forward + factors, streamed to disk)",
        f"- H's training over the mapped cache (run 3 - run 2): {result['h_images_per_s']:.0f} images/s",
        f"- cache: {result['cache_bytes_per_image'] / 1024:.1f} KiB per image; materialized r_x would be "
        f"{result['materialized_bytes_per_image'] / 2**20:.1f} MiB per image "
        f"({result['materialized_bytes_per_image'] / result['cache_bytes_per_image']:.0f}x more; "
        f"{result['materialized_bytes_per_image'] * 1_281_167 / 2**40:.1f} TiB for ImageNet-1k's 1,281,167 "
        f"training images, against {result['cache_bytes_per_image'] * 1_281_167 / 2**30:.1f} GiB)",
    ]
    (out / "fit_scale.json").write_text(json.dumps(result, indent=2))
    (out / "fit_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    sys.exit(run_script(main))
