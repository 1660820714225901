"""Are "why P, rather than Q?" maps faithful to z_P - z_Q? A contrastive deletion test on CIFAR-10.

For each test image, f's prediction P and every other class Q: remove the top k % of pixels ranked by
(a) the contrastive map of Q, (b) plain Grad-CAM of P, (c) a random map, filled with the normalization mean
(a gray) or blurred, and record f's margin z_P - z_Q. A faithful contrastive map makes the margin fall
fastest. Reported per fill and for Q = the runner-up class and Q = every class but P:

* relative AUC: area under the mean margin curve over k, divided by the clean mean margin (1: no fall;
  lower is more faithful);
* margin area: the per-image area (logit units), and its paired difference to Grad-CAM and to random
  (mean +- standard error), with the share of maps where the contrastive one is lower ("wins");
* flipped at 20 %: the share of (image, Q) where z_Q > z_P after removing 20 %.

Then the cost of all N maps for a batch (``benchmarks/explain_cost.py``). Writes ``explain.md``,
``explain.json`` and ``explain_deletion.png`` to ``--out``:

    python benchmarks/explain.py --backbone runs/main/backbone --out runs/explain
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from explain_cost import cost_table, measure_cost
from tqdm.auto import tqdm

from timm_introspect.apps.explain import Explainer, deletion_logits, margin_auc
from timm_introspect.apps.explain.job import load_classifier
from timm_introspect.data.images import load_images
from timm_introspect.data.outputs import prepare_output, save_figure
from timm_introspect.jobs.args import OneLineParser, deprecated, non_negative, positive, run_script
from timm_introspect.jobs.plots import pyplot
from timm_introspect.jobs.robustness import normalized_batches

FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
KINDS = ("contrastive", "grad-cam", "random")


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True,
                   help="f: a folder in timm's layout (e.g. runs/main/backbone), an introspective model's folder, "
                        "hf-hub:<repo>, or a timm architecture name with --checkpoint")
    p.add_argument("--checkpoint", default=None, help="f's weights (.safetensors) for an architecture name")
    p.add_argument("--data", default="/work/shared/data/cifar10")
    p.add_argument("--test-images", type=positive, default=500, help="seeded subset of test images")
    deprecated(p, "--images", "--test-images", type=positive)
    p.add_argument("--fills", nargs="+", default=["mean", "blur"], choices=["mean", "blur"])
    p.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS),
                   help="fractions of pixels deleted: increasing, in [0, 1], starting at 0")
    p.add_argument("--target-layer", default=None, help="explain at this layer (autograd); default: the final map")
    p.add_argument("--batch-size", type=positive, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost-batch", type=non_negative, default=64, help="batch for the cost measurement (0: skip it)")
    p.add_argument("--preset", choices=["full", "quick"], default="full", help="quick: 100 images, mean fill only")
    deprecated(p, "--quick", "--preset quick", flag=True, const="quick")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    f = args.fractions
    if f[0] != 0 or any(b <= a for a, b in zip(f, f[1:], strict=False)) or f[-1] > 1:
        p.error(f"--fractions must increase strictly from 0 to at most 1 (the deletion curve's x), got {f}")
    return args


def explain_all(model, pixels, target_layer, batch_size):
    """Upsampled [0, 1] maps: contrastive ``(n, N, H, W)`` for every Q, Grad-CAM ``(n, H, W)``; P; the plan."""
    explainer = Explainer(model, target_layer)
    contrastive, gcam, preds, logits = [], [], [], []
    for x in tqdm(list(normalized_batches(model, pixels, batch_size)), desc="maps", leave=False):
        out = explainer(x, "all")
        contrastive.append(out.maps("contrastive"))
        gcam.append(out.maps("grad_cam"))
        preds.append(out.prediction)
        logits.append(out.logits)
    return torch.cat(contrastive), torch.cat(gcam), torch.cat(preds), torch.cat(logits), out.plan


def margins_for(logits: torch.Tensor, prediction: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """``(n, F, K)`` margins z_P - z_Q from logits ``(n, F, N)`` and ``contrast`` ``(n, K)``."""
    z_p = logits.gather(2, prediction[:, None, None].expand(-1, logits.shape[1], 1))
    z_q = logits.gather(2, contrast[:, None, :].expand(-1, logits.shape[1], -1))
    return z_p - z_q


def deletion(model, x, contrastive, gcam, prediction, runner_up, fractions, fill, batch_size, seed):
    """Margin curves ``(n, F, N - 1)`` per kind of map, for every Q other than P (Q in class order)."""
    n, classes = contrastive.shape[:2]
    others = torch.stack([torch.tensor([q for q in range(classes) if q != p]) for p in prediction.tolist()])
    rows = torch.arange(n)[:, None].expand_as(others)
    maps = contrastive[rows, others].flatten(0, 1)
    image = rows.flatten()
    logits = deletion_logits(model, x, maps, fractions, fill, image, batch_size, seed)
    contrast_margin = logits.gather(2, prediction[image][:, None, None].expand(-1, len(fractions), 1))[..., 0] - \
        logits.gather(2, others.flatten()[:, None, None].expand(-1, len(fractions), 1))[..., 0]
    curves = {"contrastive": contrast_margin.view(n, -1, len(fractions)).transpose(1, 2)}
    curves["grad-cam"] = margins_for(deletion_logits(model, x, gcam, fractions, fill, None, batch_size, seed),
                                     prediction, others)
    noise = torch.rand(gcam.shape, generator=torch.Generator().manual_seed(seed + 1))
    curves["random"] = margins_for(deletion_logits(model, x, noise, fractions, fill, None, batch_size, seed),
                                   prediction, others)
    runner = (others == runner_up[:, None]).float().argmax(dim=1)
    return curves, others, runner


def summarize(curves: dict, fractions, select: torch.Tensor | None) -> dict:
    """Metrics per kind over the (image, Q) pairs ``select`` picks (``(n,)`` index of Q per image) or all."""
    flat = {k: (v[torch.arange(len(v)), :, select] if select is not None else v.transpose(1, 2).flatten(0, 1))
            for k, v in curves.items()}  # (M, F)
    at20 = min(range(len(fractions)), key=lambda i: abs(fractions[i] - 0.2))
    area = {k: margin_auc(v, fractions) for k, v in flat.items()}
    out = {"pairs": len(flat["contrastive"]), "clean_margin": float(flat["contrastive"][:, 0].mean())}
    for kind, v in flat.items():
        mean = v.double().mean(0)
        out[kind] = {"relative_auc": float(margin_auc((mean / mean[0])[None], fractions)[0]),
                     "relative_curve": (mean / mean[0]).tolist(), "margin_area": float(area[kind].mean()),
                     "flipped_at_20": float((v[:, at20] < 0).double().mean())}
    for other in ("grad-cam", "random"):
        diff = area["contrastive"] - area[other]
        out[f"contrastive_minus_{other}"] = {"mean": float(diff.mean()), "se": float(diff.std() / math.sqrt(len(diff))),
                                            "wins": float((diff < 0).double().mean())}
    return out


def markdown(result: dict) -> str:
    lines = [f"Deletion test on {result['images']} CIFAR-10 test images (seed {result['seed']}), f = "
             f"`{result['backbone']}` ({result['accuracy']:.1%} on them); maps: {result['plan']}. Fractions removed: "
             f"{', '.join(f'{f:g}' for f in result['fractions'])}. Lower AUC / area = the margin falls faster.", ""]
    lines += ["| fill | Q | pairs | clean margin | relative AUC: contrastive / Grad-CAM / random | margin area: "
              "contrastive / Grad-CAM / random | contrastive - Grad-CAM (wins) | contrastive - random (wins) | "
              "flipped at 20 %: contrastive / Grad-CAM / random |",
              "| --- | --- | ---: | ---: | --- | --- | --- | --- | --- |"]
    for fill, sets in result["deletion"].items():
        for name, s in sets.items():
            auc = " / ".join(f"{s[k]['relative_auc']:.3f}" for k in KINDS)
            area = " / ".join(f"{s[k]['margin_area']:.3f}" for k in KINDS)
            flips = " / ".join(f"{s[k]['flipped_at_20']:.1%}" for k in KINDS)
            d = [s[f"contrastive_minus_{o}"] for o in ("grad-cam", "random")]
            diffs = [f"{v['mean']:+.3f} +- {v['se']:.3f} ({v['wins']:.0%})" for v in d]
            lines.append(f"| {fill} | {name} | {s['pairs']} | {s['clean_margin']:.3f} | {auc} | {area} | {diffs[0]} | "
                         f"{diffs[1]} | {flips} |")
    lines.append(f"\nMaps with no positive part (all zero after ReLU, ranked at random): {result['zero_maps']:.1%} of "
                 "the contrastive maps for Q != P.")
    if "cost" in result:
        lines += ["", cost_table(result["cost"])]
    lines.append(f"\nTotal {result['seconds']:.0f} s.")
    return "\n".join(lines)


def plot(result: dict, out: Path) -> str:
    plt = pyplot()
    fills = list(result["deletion"])
    fig, axes = plt.subplots(1, 2 * len(fills), figsize=(4.2 * 2 * len(fills), 3.6), squeeze=False)
    colors = {"contrastive": "tab:red", "grad-cam": "tab:blue", "random": "tab:gray"}
    for ax, (fill, name) in zip(axes.flat, [(f, n) for f in fills for n in ("runner-up", "every Q")], strict=False):
        s = result["deletion"][fill][name]
        for kind in KINDS:
            ax.plot([100 * f for f in result["fractions"]], s[kind]["relative_curve"], marker="o", ms=3, c=colors[kind],
                    label=f"{kind} (AUC {s[kind]['relative_auc']:.2f})")
        ax.axhline(0, c="k", lw=0.5)
        ax.set(xlabel="pixels removed (%)", ylabel="mean z_P - z_Q / clean", title=f"{fill} fill, Q = {name}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "explain_deletion.png", dpi=120)
    plt.close(fig)
    return "explain_deletion.png"


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out = str(prepare_output(args.out, "benchmark"))  # before any work
    if args.preset == "quick":
        args.test_images, args.fills = min(args.test_images, 100), ["mean"]
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyplot()  # fail now, not after the work, without matplotlib
    model, _ = load_classifier(args.backbone, args.checkpoint)
    model = model.eval().to(memory_format=torch.channels_last)  # faster on a CPU
    test = load_images(args.data, "test", limit=args.test_images, seed=args.seed)
    pixels, labels = test.arrays(model)  # f's own resize and crop (none for a CIFAR model)
    x = torch.cat(list(normalized_batches(model, pixels, args.batch_size)))
    x = x.contiguous(memory_format=torch.channels_last)
    contrastive, gcam, prediction, logits, plan = explain_all(model, pixels, args.target_layer, args.batch_size)
    runner_up = logits.topk(2, dim=1).indices[:, 1]
    result = {"backbone": args.backbone, "images": len(x), "seed": args.seed, "fractions": args.fractions,
              "accuracy": float((prediction == torch.as_tensor(labels)).float().mean()),
              "plan": f"{plan.method} at {plan.layer} ({'x'.join(map(str, plan.layout.grid))})", "deletion": {}}
    keep = torch.ones(contrastive.shape[:2], dtype=torch.bool)
    keep[torch.arange(len(x)), prediction] = False
    result["zero_maps"] = float((contrastive[keep].flatten(1).amax(1) == 0).double().mean())
    for fill in tqdm(args.fills, desc="fills"):
        curves, _, runner = deletion(model, x, contrastive, gcam, prediction, runner_up, args.fractions, fill,
                                     args.batch_size, args.seed)
        result["deletion"][fill] = {"runner-up": summarize(curves, args.fractions, runner),
                                    "every Q": summarize(curves, args.fractions, None)}
    if args.cost_batch:
        result["cost"] = measure_cost(model, x[: args.cost_batch], repeats=3, authors_images=4)
    result["seconds"] = time.perf_counter() - start
    result["plot"] = plot(result, out)
    (out / "explain.json").write_text(json.dumps(result, indent=2))
    (out / "explain.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    sys.exit(run_script(lambda: 0 if main() else 1))
