"""How long ImageNet-C's corruptions take: seconds per corruption for N images at 224 px, one process.

Times ``corrupt(..., dataset="imagenet")`` per corruption and severity, on chunks of 100 images (as
``write_imagenet_c`` does), without writing JPEGs. The images are CIFAR-10 test images (or DTD textures)
brought to 224x224 by ``imagenet_preprocess`` (Resize(256), CenterCrop(224)), as the generator's input.
Run it with ``OMP_NUM_THREADS=1`` for one core's figures:

    OMP_NUM_THREADS=1 python benchmarks/imagenetc_speed.py --data ../shared/data/cifar10 \\
        --frost-dir ../shared/data/cifar10c-frost --corruption-images 1000 --severities 3 --out runs/imagenetc_speed

Writes ``imagenetc_speed.json`` and ``imagenetc_speed.md`` in ``--out``: measured seconds, and the same
scaled to 1,000 images (and to ImageNet's 50,000 x 5 severities) when fewer were timed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from timm_introspect.data.cifar10c import CORRUPTIONS, corrupt, imagenet_preprocess
from timm_introspect.data.cifar10c.imagenet import JPEG_OPTIONS
from timm_introspect.data.images import load_images
from timm_introspect.data.outputs import prepare_output
from timm_introspect.jobs.args import OneLineParser, deprecated, positive, run_script
from timm_introspect.jobs.args import severity as severity_type


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/cifar10",
                   help="images to corrupt: a local Parquet folder or Hub id (CIFAR-10, DTD, ...)")
    p.add_argument("--split", default="test")
    p.add_argument("--corruption-images", type=positive, default=1000, help="how many images to time (default 1000)")
    deprecated(p, "--images", "--corruption-images", type=positive)
    p.add_argument("--severities", nargs="+", type=severity_type, default=[3], help="severities to time (default 3)")
    p.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS))
    p.add_argument("--chunk", type=positive, default=100, help="images per corrupt() call (default 100)")
    p.add_argument("--repeat", type=positive, default=1,
                   help="time each corruption this many times and keep the fastest (on a shared machine)")
    p.add_argument("--frost-dir", default=None, help="the frost overlays; without them frost is skipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for imagenetc_speed.json / .md")
    return p.parse_args(argv)


def load_224(source: str, split: str, n: int, seed: int) -> np.ndarray:
    """``n`` images of ``source`` through imagenet_preprocess: ``(n, 224, 224, 3)`` uint8."""
    data = load_images(source, split=split, limit=n, seed=seed)
    if len(data) < n:
        raise SystemExit(f"{source} [{split}] has {len(data)} images, fewer than --corruption-images {n}")
    column = data.dataset[data.image_column]
    return np.stack([imagenet_preprocess(img) for img in column])


def jpeg_seconds(images: np.ndarray) -> float:
    """Time to encode ``images`` as the generator saves them (PIL JPEG, quality 85, optimize), in memory."""
    start = time.perf_counter()
    for img in images:
        Image.fromarray(img).save(io.BytesIO(), format="JPEG", **JPEG_OPTIONS)
    return time.perf_counter() - start


def time_corruptions(images: np.ndarray, corruptions, severities, chunk: int, frost_dir, seed: int,
                     repeat: int = 1) -> tuple[dict, dict]:
    """``{corruption: {severity: seconds}}`` of corrupt() on all of ``images``, ``chunk`` at a time (the
    fastest of ``repeat`` runs), and the same for encoding its outputs as JPEG (timed apart)."""
    seconds: dict[str, dict[int, float]] = {}
    jpeg: dict[str, dict[int, float]] = {}
    for name in corruptions:
        seconds[name], jpeg[name] = {}, {}
        for severity in severities:
            corrupt(images[:2], name, severity, 0, frost_dir=frost_dir, dataset="imagenet")  # warm-up: lazy imports
            runs, encode = [], 0.0
            for _ in range(repeat):
                rng = np.random.default_rng([seed, CORRUPTIONS.index(name), severity])
                runs.append(0.0)
                for i in range(0, len(images), chunk):
                    start = time.perf_counter()
                    out = corrupt(images[i : i + chunk], name, severity, rng, frost_dir=frost_dir,
                                  dataset="imagenet")
                    runs[-1] += time.perf_counter() - start
                    if len(runs) == 1:
                        encode += jpeg_seconds(out)
            seconds[name][severity], jpeg[name][severity] = min(runs), encode
            print(f"{name:18s} severity {severity}: {seconds[name][severity]:8.2f} s (JPEG "
                  f"{jpeg[name][severity]:.2f} s)", flush=True)
    return seconds, jpeg


def table(result: dict) -> str:
    n, sev = result["images"], result["severities"]
    scaled = n != 1000
    head = [f"# ImageNet-C generation time, one process (OMP_NUM_THREADS={result['omp_num_threads']})", "",
            f"{n} images at 224x224 ({result['data']}), severities {', '.join(map(str, sev))}, chunks of "
            f"{result['chunk']}, fastest of {result['repeat']} run(s); seconds of corrupt(), and apart from them "
            "of encoding its outputs as the generator "
            f"saves them (JPEG quality 85, optimize; in memory, no disk). Machine: {result['machine']}.", ""]
    if scaled:
        head += [f"Seconds per 1,000 images are **extrapolated** linearly from the {n} timed.", ""]
    cols = ["corruption", *(f"s{s} ({n} img)" for s in sev), *(f"s{s} per 1,000" for s in sev),
            "JPEG q85 per 1,000"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    total, total_jpeg = dict.fromkeys(sev, 0.0), 0.0
    for name, per in result["seconds"].items():
        jpeg = sum(result["jpeg_seconds"][name].values()) / len(sev) * 1000 / n
        row = ([name] + [f"{per[str(s)]:.2f}" for s in sev] + [f"{per[str(s)] * 1000 / n:.1f}" for s in sev]
               + [f"{jpeg:.1f}"])
        lines.append("| " + " | ".join(row) + " |")
        total_jpeg += jpeg
        for s in sev:
            total[s] += per[str(s)]
    lines.append("| **all** | " + " | ".join([f"{total[s]:.2f}" for s in sev]
                                              + [f"{total[s] * 1000 / n:.1f}" for s in sev]
                                              + [f"{total_jpeg:.1f}"]) + " |")
    mean = sum(total.values()) / len(sev) * 1000 / n
    foot = ["", f"All {len(result['seconds'])} corruptions at one severity: about {mean:.0f} s per 1,000 images; "
            f"ImageNet-C's 50,000 validation images x 5 severities would take about {mean * 50 * 5 / 3600:.1f} "
            "core-hours at that rate (severities differ; JPEG encoding not included)."]
    if result["skipped"]:
        foot.append(f"Skipped: {', '.join(result['skipped'])} (no --frost-dir).")
    return "\n".join(head + lines + foot) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    prepare_output(args.out, "benchmark")  # before any work
    corruptions = [c for c in args.corruptions if c != "frost" or args.frost_dir]
    skipped = [c for c in args.corruptions if c not in corruptions]
    start = time.perf_counter()
    images = load_224(args.data, args.split, args.corruption_images, args.seed)
    print(f"{len(images)} images at 224 px in {time.perf_counter() - start:.1f} s", flush=True)
    corrupt(images[: args.chunk], "contrast", 1, dataset="imagenet")  # warm-up: the first large allocations
    seconds, jpeg = time_corruptions(images, corruptions, args.severities, args.chunk, args.frost_dir, args.seed,
                                     args.repeat)
    result = {"images": len(images), "data": args.data, "severities": args.severities, "chunk": args.chunk,
              "repeat": args.repeat,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "seconds": {c: {str(s): t for s, t in per.items()} for c, per in seconds.items()},
              "seconds_per_1000": {c: {str(s): t * 1000 / len(images) for s, t in per.items()}
                                   for c, per in seconds.items()},
              "jpeg_seconds": {c: {str(s): t for s, t in per.items()} for c, per in jpeg.items()},
              "extrapolated": len(images) != 1000, "skipped": skipped}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "imagenetc_speed.json").write_text(json.dumps(result, indent=2))
    (out / "imagenetc_speed.md").write_text(table(result))
    print(table(result))
    return result


if __name__ == "__main__":
    sys.exit(run_script(main))
