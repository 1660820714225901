"""Images per second: f alone, introspective inference, r_x alone, and the paper's per-image way.

    (a) forward      f's plain forward pass (inference mode)
    (b) introspect   forward + r_x + scaling + H: ``head(x)``
    (c) features     r_x alone: ``head.flat_features(x)`` (``introspective_factors`` for a factored H)
    (d) paper        one image at a time: ``loss.backward()`` on a model whose weights all require
                     grad, then read the classifier weight's ``.grad``

Each is warmed up, then timed ``--repeats`` times; the table shows medians (this machine is noisy),
then the ratios (b)/(a) (time; 1.0 = introspection is free) and (d)/(b) (speed-up over the paper).

    python benchmarks/throughput.py --arch resnet18 --cifar-stem --img-size 32 --batch-size 128
    python benchmarks/throughput.py --device cuda --dtype bfloat16 --batch-size 256 --channels-last
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch

from timm_introspect import IntrospectiveHead, find_classifiers, introspection_loss, list_nets
from timm_introspect.data.outputs import prepare_output_file
from timm_introspect.jobs.args import OneLineParser, deprecated, positive, run_script
from timm_introspect.nets.cifar import create_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", default=["resnet18"], help="timm architectures")
    deprecated(p, "--model", "--arch", nargs="+")
    p.add_argument("--num-classes", type=positive, default=10)
    p.add_argument("--cifar-stem", action="store_true")
    p.add_argument("--img-size", type=positive, default=32)
    p.add_argument("--batch-size", type=positive, nargs="+", default=[128])
    p.add_argument("--dtype", choices=list(DTYPES), default="float32", help="autocast dtype (float32: none)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile f (and H)")
    p.add_argument("--loss", default="mse")
    p.add_argument("--net", choices=list_nets(), default="mlp",
                   help="H: the paper's MLP on materialized r_x, or one reading r_x factored "
                        "(timm_introspect.nets.lowrank)")
    deprecated(p, "--head", "--net", choices=list_nets())
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=positive, default=10)
    p.add_argument("--paper-images", type=positive, default=32, help="images timed one by one for (d)")
    p.add_argument("--skip-paper", action="store_true")
    p.add_argument("--threads", type=positive, default=None)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--data", default=None,
                   help="also time a whole dataset (a Hub id or local folder): forward pass vs r_x extraction, "
                        "data loading included")
    p.add_argument("--data-split", default="test")
    p.add_argument("--test-images", type=positive, default=None, help="a seeded subset of --data's images")
    deprecated(p, "--data-limit", "--test-images", type=positive)
    p.add_argument("--workers", type=int, default=0)
    return p.parse_args(argv)


def timed(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> list[float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def paper_way(model: torch.nn.Module, x: torch.Tensor, loss: str, target: float, autocast) -> torch.Tensor:
    """The paper's extraction: per image, a full ``loss.backward()``, then the classifier's ``.grad``."""
    weight = find_classifiers(model)[0].weight
    grads = []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        with autocast():
            logits = model(x[i : i + 1])
        introspection_loss(loss, logits.float(), target).sum().backward()
        grads.append(weight.grad.detach().clone())
    return torch.stack(grads)


def bench(name: str, batch: int, args) -> dict:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = create_model(name, args.num_classes, cifar_stem=args.cifar_stem).to(device).eval()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(batch, 3, args.img_size, args.img_size, device=device).to(memory_format=memory_format)

    def autocast():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    # (d) needs a model whose weights require grad, as in the paper; build it before wrapping freezes f
    paper_model = None
    if not args.skip_paper:
        paper_model = create_model(name, args.num_classes, cifar_stem=args.cifar_stem).to(device).eval()
        paper_model.load_state_dict(model.state_dict())
        paper_model = paper_model.to(memory_format=memory_format)

    head = IntrospectiveHead.wrap(model, loss=args.loss, introspective_net=args.net).to(device)
    with torch.no_grad(), autocast():
        head.fit([x], progress=False)
    forward = torch.compile(model) if args.compile else model
    if args.compile:
        head.model = forward
        head.introspective_net = torch.compile(head.introspective_net)

    def run_forward():
        with torch.inference_mode(), autocast():
            return forward(x)

    def run_introspect():
        with torch.no_grad(), autocast():
            return head(x)

    def run_features():
        with torch.no_grad(), autocast():
            return head.introspective_factors(x) if head.takes_factors else head.flat_features(x)

    rows = {}
    for key, fn in (("forward", run_forward), ("introspect", run_introspect), ("features", run_features)):
        times = timed(fn, args.warmup, args.repeats, device)
        median = statistics.median(times)
        rows[key] = {"median_s": median, "images_per_s": batch / median, "times_s": times}
    if paper_model is not None:
        n = min(args.paper_images, batch)
        times = timed(lambda: paper_way(paper_model, x[:n], args.loss, 1.0, autocast), 1, max(1, args.repeats // 3),
                      device)
        median = statistics.median(times)
        rows["paper"] = {"median_s": median, "images_per_s": n / median, "times_s": times, "images": n}

    # peak memory: CUDA allocator peak; on CPU the process's peak RSS (run one configuration per process)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "model": name, "batch_size": batch, "img_size": args.img_size, "dtype": args.dtype, "device": str(device),
        "channels_last": args.channels_last, "compile": args.compile, "loss": args.loss, "head": args.net,
        "rows": rows,
        "introspect_over_forward": rows["introspect"]["median_s"] / rows["forward"]["median_s"],
        "features_over_forward": rows["features"]["median_s"] / rows["forward"]["median_s"],
        "peak_memory_bytes": peak,
    }
    if "paper" in rows:
        result["paper_over_introspect"] = rows["introspect"]["images_per_s"] / rows["paper"]["images_per_s"]
    return result


def bench_dataset(name: str, batch: int, args) -> dict:
    """One pass over a dataset (decode, transform, batch) with f alone vs with r_x extraction."""
    from torch.utils.data import DataLoader

    from timm_introspect.data.images import load_images, make_transform

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(name, args.num_classes, cifar_stem=args.cifar_stem).to(device).eval()
    head = IntrospectiveHead.wrap(model, loss=args.loss, scale=False).to(device)
    images = load_images(args.data, args.data_split, limit=args.test_images)
    dataset = images.torch_dataset(make_transform(model, train=False))

    def collate(rows):
        return torch.stack([r["pixel_values"] for r in rows])

    def one_pass(fn) -> float:
        loader = DataLoader(dataset, batch_size=batch, num_workers=args.workers, collate_fn=collate)
        t0 = time.perf_counter()
        for x in loader:
            fn(x.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def forward(x):
        with torch.inference_mode():
            return model(x)

    def extract(x):
        with torch.no_grad():
            return head.flat_features(x)

    one_pass(forward)  # warm-up (and the dataset's own caches)
    times = {"forward": [], "extract": []}
    for _ in range(max(1, args.repeats // 3)):
        times["forward"].append(one_pass(forward))
        times["extract"].append(one_pass(extract))
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "data": args.data, "images": len(images), "batch_size": batch, "times_s": times,
            "median_s": median, "extract_over_forward": median["extract"] / median["forward"]}


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.json:
        prepare_output_file(args.json)  # before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.arch:
        for batch in args.batch_size:
            r = bench(name, batch, args)
            results.append(r)
            print(f"\n{name}  batch {batch}  {args.img_size}px  {args.dtype}  {args.device}  H={args.net}"
                  f"{'  channels_last' if args.channels_last else ''}{'  compiled' if args.compile else ''}")
            print(f"  {'':12s} {'images/s':>10s} {'ms/batch':>10s}")
            for key, row in r["rows"].items():
                ms_per_batch = 1000 * row["median_s"] * batch / row.get("images", batch)
                print(f"  {key:12s} {row['images_per_s']:10.1f} {ms_per_batch:10.2f}")
            print(f"  (b)/(a) time: {r['introspect_over_forward']:.3f}   "
                  f"(c)/(a) time: {r['features_over_forward']:.3f}", end="")
            if "paper_over_introspect" in r:
                print(f"   (d)/(b) speed-up: {r['paper_over_introspect']:.1f}x", end="")
            print(f"\n  peak memory: {r['peak_memory_bytes'] / 2**20:.0f} MiB")
    if args.data:
        for name in args.arch:
            for batch in args.batch_size:
                r = bench_dataset(name, batch, args)
                results.append(r)
                print(f"\n{name} over {r['images']} images of {args.data} [{args.data_split}], batch {batch}: "
                      f"forward pass {r['median_s']['forward']:.2f} s, "
                      f"r_x extraction {r['median_s']['extract']:.2f} s, "
                      f"ratio {r['extract_over_forward']:.3f}")
    if args.json:
        meta = {"torch": torch.__version__, "platform": platform.platform(), "threads": torch.get_num_threads()}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    sys.exit(run_script(main))
