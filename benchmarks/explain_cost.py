"""What all N contrastive maps of a batch cost: closed form vs autograd vs the authors' way vs one forward pass.

* forward: f on the batch, no gradients (the floor);
* closed form: ``Explainer(f)(x, contrast="all")``: one forward pass, weights from W (or the head's Jacobian);
* autograd, batched: ``Explainer(f, method="autograd")`` at the final map: one forward, then one backward
  pass of the whole batch per class (N + 1 in all) through the head only;
* the authors' way (ContrastCAM): one image and one Q per call, each a forward and a backward pass:
  B x N of them. With ``--authors-images`` below B it is timed on that many images and scaled to B.

Median of ``--repeats`` runs (after one warm-up). Run alone, or from ``benchmarks/explain.py``:

    python benchmarks/explain_cost.py --backbone runs/main/backbone --batch 64
    python benchmarks/explain_cost.py --arch resnet50 --size 224 --classes 1000 --batch 8 --authors-images 1 \\
        --authors-classes 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import timm
import torch
import torch.nn.functional as F

from timm_introspect.apps.explain import Explainer
from timm_introspect.data.outputs import prepare_output_file, write_json
from timm_introspect.jobs.args import OneLineParser, positive, run_script


def _median_seconds(ways: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, the ways interleaved in every repeat (a shared, loaded CPU drifts)."""
    for fn in ways.values():  # warm-up (and the explainers' plans)
        fn()
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def authors_way(model: torch.nn.Module, x: torch.Tensor, classes: int) -> list[torch.Tensor]:
    """Contrastive maps one image and one Q at a time: forward, CE(z, Q).backward(), weights, ReLU."""
    maps = []
    for i in range(len(x)):
        for q in range(classes):
            features = model.forward_features(x[i : i + 1])
            features.retain_grad()
            F.cross_entropy(model.forward_head(features), torch.tensor([q], device=x.device)).backward()
            alpha = features.grad.mean(dim=(2, 3), keepdim=True)
            maps.append(torch.relu((alpha * features.detach()).sum(1)))
            model.zero_grad(set_to_none=True)
    return maps


def measure_cost(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3, authors_images: int | None = None,
                 authors_classes: int | None = None) -> dict:
    """Seconds per batch for each way, and their ratios to one forward pass. The authors' way is timed on
    ``authors_images`` images x ``authors_classes`` classes and scaled to the batch x N."""
    model = model.eval()
    classes = model.num_classes
    closed, auto = Explainer(model), Explainer(model, method="autograd")
    if closed.plan(x).method != "closed-form":
        raise SystemExit(f"the closed form does not apply to this model: {closed.plan(x).reason}")

    def forward():
        with torch.no_grad():
            model(x)

    n = min(authors_images or len(x), len(x))
    k = min(authors_classes or classes, classes)
    params = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)  # as in a plain training-mode model: the authors' backward reaches the weights
    try:
        seconds = _median_seconds({
            "forward": forward,
            "closed form, all N": lambda: closed(x, "all"),
            "autograd batched, all N": lambda: auto(x, "all"),
            "authors' way, all N": lambda: authors_way(model, x[:n], k),
        }, repeats)
        seconds["authors' way, all N"] *= len(x) * classes / (n * k)
        ref = torch.stack(authors_way(model, x[:1], k))[:, 0]
    finally:
        for p, flag in zip(model.parameters(), params, strict=True):
            p.requires_grad_(flag)
    check = closed(x[:1], "all").contrastive[0, :k]
    agreement = float((check - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    return {
        "batch": len(x), "input": list(x.shape[1:]), "classes": classes, "threads": torch.get_num_threads(),
        "authors_images_timed": n, "authors_classes_timed": k, "seconds": seconds,
        "ratio_to_forward": {k: v / seconds["forward"] for k, v in seconds.items()},
        "closed_vs_authors_max_rel_diff": agreement,
    }


def cost_table(cost: dict) -> str:
    lines = [f"All {cost['classes']} contrastive maps for a batch of {cost['batch']} images "
             f"{'x'.join(map(str, cost['input']))} ({cost['threads']} threads):", "",
             "| way | seconds per batch | x one forward pass |", "| --- | ---: | ---: |"]
    for way, sec in cost["seconds"].items():
        lines.append(f"| {way} | {sec:.4f} | {cost['ratio_to_forward'][way]:.2f} |")
    if cost["authors_images_timed"] < cost["batch"] or cost["authors_classes_timed"] < cost["classes"]:
        lines.append(f"\n(the authors' way timed on {cost['authors_images_timed']} image(s) x "
                     f"{cost['authors_classes_timed']} classes, scaled to the batch x {cost['classes']})")
    lines.append(f"\nclosed form vs the authors' maps (one image, {cost['authors_classes_timed']} Q): max relative "
                 f"difference {cost['closed_vs_authors_max_rel_diff']:.1e}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default=None,
                   help="f: a folder, hf-hub:<repo>, or an architecture name with --checkpoint; default: --arch with "
                        "random weights")
    p.add_argument("--checkpoint", default=None, help="f's weights (.safetensors) for an architecture name --backbone")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=positive, default=224)
    p.add_argument("--classes", type=positive, default=1000)
    p.add_argument("--batch", type=positive, default=64)
    p.add_argument("--repeats", type=positive, default=3)
    p.add_argument("--authors-images", type=positive, default=None, help="time the authors' way on this many images")
    p.add_argument("--authors-classes", type=positive, default=None, help="... and this many classes (then scale)")
    p.add_argument("--out", default=None, help="JSON file")
    args = p.parse_args(argv)
    if args.out:
        prepare_output_file(args.out)  # before any work
    if args.backbone:
        from timm.data import resolve_model_data_config

        from timm_introspect.apps.explain.job import load_classifier

        model, _ = load_classifier(args.backbone, args.checkpoint)
        size = resolve_model_data_config(model)["input_size"]
    else:
        model = timm.create_model(args.arch, num_classes=args.classes)
        size = (3, args.size, args.size)
    x = torch.randn(args.batch, *size, generator=torch.Generator().manual_seed(0))
    cost = measure_cost(model, x, args.repeats, args.authors_images, args.authors_classes)
    cost["model"] = args.backbone or args.arch
    print(cost_table(cost))
    if args.out:
        write_json(args.out, cost)
    return cost


if __name__ == "__main__":
    sys.exit(run_script(main))
