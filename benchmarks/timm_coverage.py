"""How much of timm can be introspected exactly?

For every architecture in ``timm.list_models()`` (or a shard of them): build it with random weights and
``num_classes=10`` at a small input size, wrap it in ``IntrospectiveHead``, and compare r_x with
autograd on two images: each image's loss back-propagated on its own to the classifier weight
(f runs once on the batch for both, so f's own batch-vs-single rounding does not count). One row per
architecture, then a summary line::

    coverage: OK/TOTAL exact (P%), R refused, F failed, S skipped

Statuses: ``ok`` (exact: relative error below the tolerance, and f's logits bit-identical),
``refused`` (timm-introspect raised one of its own errors on purpose, e.g. no classifier),
``failed`` (anything else: a wrong result or an unexpected exception), ``skipped`` (too large for
this machine, or the architecture cannot be built at all without timm-introspect involved).

    python benchmarks/timm_coverage.py                   # everything (hours on 2 cores)
    python benchmarks/timm_coverage.py --shard 1/4       # a quarter
    python benchmarks/timm_coverage.py --models 'resnet*' 'vit_tiny*'
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import json
import math
import sys
import time
import traceback
import warnings
import zlib
from collections import Counter

import timm
import torch

from timm_introspect import IntrospectiveHead, NoClassifierError, autograd_features
from timm_introspect.data.outputs import prepare_output_file
from timm_introspect.errors import InvalidArgumentError
from timm_introspect.jobs.args import OneLineParser, positive, run_script

warnings.filterwarnings("ignore")


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shard", default="1/1", help="i/n: run the i-th of n interleaved shards (1-based)")
    p.add_argument("--models", nargs="*", default=None, help="fnmatch patterns; default: all of timm.list_models()")
    p.add_argument("--img-size", type=positive, default=64,
                   help="input size tried first (the default size is the fallback)")
    p.add_argument("--loss", default="mse")
    p.add_argument("--tol", type=float, default=1e-4, help="relative error tolerance in float32")
    p.add_argument("--tol64", type=float, default=1e-5, help="relative error tolerance in float64 (the retry)")
    p.add_argument("--max-params", type=float, default=800e6, help="skip models with more parameters (memory)")
    p.add_argument("--threads", type=positive, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--jsonl", default=None, help="also append one JSON record per model to this file")
    return p.parse_args(argv)


def select(models: list[str], patterns: list[str] | None, shard: str) -> list[str]:
    """The architectures matching ``patterns`` (all by default), in shard ``i/n``; a pattern that matches no
    architecture, or an empty selection, is an error (a census of nothing would report "0/0" and succeed)."""
    if patterns:
        unmatched = [p for p in patterns if not any(fnmatch.fnmatch(m, p) for m in models)]
        if unmatched:
            raise InvalidArgumentError(f"--models {' '.join(unmatched)} match(es) no timm architecture: check the "
                                       "fnmatch pattern (e.g. 'resnet*')")
        models = [m for m in models if any(fnmatch.fnmatch(m, p) for p in patterns)]
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise InvalidArgumentError(f"--shard {shard}: write i/n, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise InvalidArgumentError(f"--shard {shard}: need 1 <= i <= n")
    if not models[i - 1 :: n]:
        raise InvalidArgumentError(f"no architecture in shard {shard} of the {len(models)} selected")
    return models[i - 1 :: n]


def count_params(name: str) -> int:
    """Parameter count without allocating memory (built on the meta device)."""
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=10)
    return sum(p.numel() for p in model.parameters())


def build(name: str, img_size: int):
    """The model and a 2-image input: at ``img_size`` if the model takes it, else at its default size."""
    last_err = None
    for kwargs in ({"img_size": img_size}, {}):  # ViT-style models take img_size; CNNs take any size
        try:
            model = timm.create_model(name, num_classes=10, **kwargs).eval()
        except Exception as err:
            last_err = err
            continue
        chans, h, w = model.pretrained_cfg.get("input_size", (3, 224, 224))
        sizes = [(img_size, img_size)] + ([(h, w)] if not kwargs and (h, w) != (img_size, img_size) else [])
        for size in sizes:
            x = torch.randn(2, chans, *size)
            try:
                with torch.no_grad():
                    model(x[:1])
                return model, x
            except Exception as err:
                last_err = err
    raise RuntimeError(f"cannot build/run even without introspection: {type(last_err).__name__}: {last_err}")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    denom = b.norm().item()
    return (a - b).norm().item() / denom if denom > 0 else (a - b).norm().item()


def compare(head: IntrospectiveHead, model, x: torch.Tensor, loss: str, tol: float) -> tuple[float, str | None]:
    """Largest relative error of r_x against autograd, and what is wrong (None when exact)."""
    out = head.introspect(x)
    base_logits, features = out.logits, out.features()
    with torch.no_grad():
        plain = model(x)
    ref = autograd_features(model, x, loss, 1.0, one_image_per_forward=False)
    err = max(rel_err(features[k], ref[k]) for k in ref)
    if not math.isfinite(err) or not torch.isfinite(plain).all():
        return err, "non-finite logits or features"
    if not torch.equal(base_logits, plain):
        return err, "logits changed"
    if err > tol:
        return err, f"relative error {err:.2e} > {tol:g}"
    return err, None


def check(name: str, args) -> dict:
    rec = {"model": name}
    torch.manual_seed(zlib.crc32(name.encode()))  # the same weights whatever the shard
    try:
        n_params = count_params(name)
        rec["params"] = n_params
        if n_params > args.max_params:
            detail = f"{n_params / 1e6:.0f} M parameters > --max-params {args.max_params / 1e6:.0f} M (memory)"
            return {**rec, "status": "skipped", "detail": detail}
        try:
            model, x = build(name, args.img_size)
        except Exception as err:
            return {**rec, "status": "skipped", "detail": str(err).splitlines()[0][:300]}
        rec["input"] = list(x.shape[1:])
        try:  # "no classifier" is a deliberate refusal; any other error is a failure
            head = IntrospectiveHead.wrap(model, loss=args.loss, scale=False)
            rec["kinds"] = [c.kind for c in head.classifiers]
            rec["dtype"], err, problem = "float32", *compare(head, model, x, args.loss, args.tol)
            if problem and problem != "logits changed":
                # Some deep nets overflow at random init in float32: judge them in float64.
                head.double()
                rec["dtype"], err, problem = "float64", *compare(head, model, x.double(), args.loss, args.tol64)
        except NoClassifierError as err:
            return {**rec, "status": "refused", "detail": f"{type(err).__name__}: {err}"}
        rec["rel_err"] = err
        if problem:
            return {**rec, "status": "failed", "detail": f"{problem} ({rec['dtype']})"}
        return {**rec, "status": "ok", "detail": f"rel err {err:.1e} {rec['dtype']}, {'+'.join(rec['kinds'])}"}
    except Exception as err:
        tb = traceback.extract_tb(err.__traceback__)[-1]
        where = f"{tb.filename.split('/')[-1]}:{tb.lineno}"
        return {**rec, "status": "failed", "detail": f"{type(err).__name__}: {str(err)[:200]} ({where})"}
    finally:
        gc.collect()


def run_census(names: list[str], check, args) -> Counter:
    """``check(name, args)`` for every architecture: one printed line each, records appended to ``args.jsonl``."""
    counts: Counter = Counter()
    sink = open(args.jsonl, "a") if args.jsonl else None  # noqa: SIM115 (kept open for the run)
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        rec = check(name, args)
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        counts[rec["status"]] += 1
        print(f"[{i}/{len(names)}] {name:50s} {rec['status']:11s} {rec['detail'][:220]}  ({rec['seconds']:.1f}s)",
              flush=True)
        if sink:
            sink.write(json.dumps(rec) + "\n")
            sink.flush()
    return counts


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.jsonl:
        prepare_output_file(args.jsonl)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = select(timm.list_models(), args.models, args.shard)
    counts = run_census(names, check, args)
    total = len(names)
    pct = 100 * counts["ok"] / total if total else 0.0
    print(
        f"coverage: {counts['ok']}/{total} exact ({pct:.1f}%), {counts['refused']} refused, "
        f"{counts['failed']} failed, {counts['skipped']} skipped"
    )
    return 0 if counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(run_script(main))
