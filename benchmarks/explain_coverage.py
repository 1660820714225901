"""For which timm architectures are "why P, rather than Q?" maps produced, and how?

For every architecture in ``timm.list_models()`` (or a seeded sample, a shard, or patterns): build it with
random weights and ``num_classes=10`` at a small input size (as ``benchmarks/timm_coverage.py`` does; at its
own input size when the small one leaves a 1x1 map), let
:class:`~timm_introspect.apps.explain.Explainer` plan, make all 10 contrastive maps for two images, and check
them against autograd the authors' way (one image, ``F.cross_entropy(z, Q).backward()``, the gradient at
the same layer averaged over positions) for two Q. One row per architecture, then a summary::

    maps: M/T (P%) of the architectures built (closed form C, autograd A), R refused, F failed, S skipped

Statuses: ``closed-form`` / ``autograd`` (maps made and equal to the reference), ``refused`` (a clear
timm-introspect error: no spatial map, no classifier), ``failed`` (a wrong map or an unexpected error),
``skipped`` (too large, or the model does not run at all without timm-introspect).

    python benchmarks/explain_coverage.py --limit 150            # a seeded random sample
    python benchmarks/explain_coverage.py --models 'vit_*' 'swin*' --jsonl runs/explain_coverage.jsonl
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import traceback
import warnings
import zlib

import timm
import torch
import torch.nn.functional as F
from timm_coverage import build, count_params, run_census, select
from torch import nn

from timm_introspect import IntrospectionError, NoSpatialMapError, find_classifiers
from timm_introspect.apps.explain import Explainer
from timm_introspect.apps.explain.layout import spatial
from timm_introspect.data.outputs import prepare_output_file
from timm_introspect.jobs.args import OneLineParser, positive, run_script

warnings.filterwarnings("ignore")


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=None, help="fnmatch patterns; default: all of timm.list_models()")
    p.add_argument("--limit", type=positive, default=None, help="a seeded random sample of this many architectures")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--shard", default="1/1", help="i/n: the i-th of n interleaved shards")
    p.add_argument("--img-size", type=positive, default=64)
    p.add_argument("--tol", type=float, default=1e-4, help="relative error tolerance in float32 (float64: tol / 10)")
    p.add_argument("--max-params", type=float, default=150e6, help="skip larger models (time and memory)")
    p.add_argument("--threads", type=positive, default=None)
    p.add_argument("--jsonl", default=None, help="also append one JSON record per model to this file")
    return p.parse_args(argv)


def randomize_classifiers(model: nn.Module) -> None:
    """timm zero-initializes some heads: random classifier weights make logits (and maps) non-degenerate."""
    try:
        layers = find_classifiers(model)
    except IntrospectionError:
        return
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(0, layer.weight[0].numel() ** -0.5)


def reference(model: nn.Module, x: torch.Tensor, layer: str, layout, q: int) -> torch.Tensor:
    """The authors' contrastive map for one image and one Q: CE(z, Q).backward() to ``layer``."""
    if layer == "forward_features":
        act = model.forward_features(x)
        logits = model.forward_head(act)
    else:
        seen = []
        handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out: seen.append(out))
        try:
            logits = model(x)
        finally:
            handle.remove()
        act = seen[0]
    act.retain_grad()
    F.cross_entropy(logits, torch.tensor([q])).backward()
    grad, value = spatial(act.grad, layout), spatial(act.detach(), layout)
    return torch.relu((grad.mean(dim=(2, 3), keepdim=True) * value).sum(1))[0]


def compare(model: nn.Module, x: torch.Tensor) -> tuple[dict, float]:
    """The plan, and the largest relative error of the maps against the reference (two Q, first image)."""
    explainer = Explainer(model)
    out = explainer(x, "all")
    plan = out.plan
    if not torch.isfinite(out.contrastive).all():
        raise FloatingPointError("non-finite maps")
    info = {"method": plan.method, "layer": plan.layer, "tail": plan.tail, "grid": list(plan.layout.grid),
            "fmt": plan.layout.fmt, "prefix": plan.layout.prefix, "reason": plan.reason}
    order = out.logits[0].argsort(descending=True).tolist()
    err = 0.0
    for q in (order[1], order[-1]):
        ref = reference(model, x[:1], plan.layer, plan.layout, q)
        diff = (out.contrastive[0, q] - ref).norm() / ref.norm().clamp_min(torch.finfo(ref.dtype).tiny)
        err = max(err, diff.item() if ref.norm() > 0 else out.contrastive[0, q].norm().item())
    return info, err


def check(name: str, args) -> dict:
    rec = {"model": name}
    torch.manual_seed(zlib.crc32(name.encode()))
    try:
        rec["params"] = count_params(name)
        if rec["params"] > args.max_params:
            return {**rec, "status": "skipped", "detail": f"{rec['params'] / 1e6:.0f} M parameters > --max-params"}
        try:
            model, x = build(name, args.img_size)
        except Exception as err:
            return {**rec, "status": "skipped", "detail": str(err).splitlines()[0][:300]}
        randomize_classifiers(model)
        rec["input"] = list(x.shape[1:])
        try:
            try:
                info, err = compare(model, x)
            except NoSpatialMapError:  # a 1x1 map at the small size: try the model's own input size
                size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
                if size == x.shape[-1]:
                    raise
                model, x = build(name, size)
                randomize_classifiers(model)
                rec["input"] = list(x.shape[1:])
                info, err = compare(model, x)
            rec.update(info, dtype="float32", rel_err=err)
            if not err <= args.tol:  # deep nets at random init can lose float32 precision: judge them in float64
                info, err = compare(model.double(), x.double())
                rec.update(info, dtype="float64", rel_err=err)
        except IntrospectionError as err:
            return {**rec, "status": "refused", "detail": f"{type(err).__name__}: {err}"}
        tol = args.tol if rec["dtype"] == "float32" else args.tol / 10
        if not err <= tol:
            detail = f"maps differ from the reference by {err:.1e} ({rec['dtype']})"
            return {**rec, "status": "failed", "detail": detail}
        detail = f"{rec['layer']} {'x'.join(map(str, rec['grid']))} {rec['fmt']}, rel err {err:.0e}"
        return {**rec, "status": rec["method"], "detail": detail + (f", {rec['tail']}" if rec["tail"] else "")}
    except Exception as err:
        tb = traceback.extract_tb(err.__traceback__)[-1]
        return {**rec, "status": "failed",
                "detail": f"{type(err).__name__}: {str(err)[:200]} ({tb.filename.split('/')[-1]}:{tb.lineno})"}
    finally:
        gc.collect()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.jsonl:
        prepare_output_file(args.jsonl)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = timm.list_models()
    if args.limit:
        names = sorted(random.Random(args.seed).sample(names, min(args.limit, len(names))))
    names = select(names, args.models, args.shard)
    start = time.perf_counter()
    counts = run_census(names, check, args)
    made = counts["closed-form"] + counts["autograd"]
    built = len(names) - counts["skipped"]
    print(f"maps: {made}/{built} ({100 * made / max(built, 1):.1f}%) of the architectures built (closed form "
          f"{counts['closed-form']}, autograd {counts['autograd']}), {counts['refused']} refused, {counts['failed']} "
          f"failed, {counts['skipped']} skipped; {len(names)} in {time.perf_counter() - start:.0f} s")
    return 0 if counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(run_script(main))
