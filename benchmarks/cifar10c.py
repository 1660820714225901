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

Held-out clean images for T: ``--calibration-rows A:B`` of the seeded-shuffled training split (default
45000:47000, unused by a model trained on a subset such as the quick preset's 4000 images). For a model
trained on all 50,000, train f with ``--holdout`` and pass the matching rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from timm_introspect import IntrospectiveHead
from timm_introspect.cifar10c import COMMON, CORRUPTIONS, corrupt, load_cifar10c
from timm_introspect.data import load_images
from timm_introspect.metrics import classification_metrics, fit_temperature

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
    p.add_argument("--calibration-rows", default="45000:47000")
    p.add_argument("--quick", action="store_true", help=f"{len(QUICK_CORRUPTIONS)} corruptions, 500 images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


@torch.no_grad()
def predict(head: IntrospectiveHead, images: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """f's and H's logits for uint8 images, with f's own preprocessing (mean/std of its data config)."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(head.model)
    if tuple(cfg["input_size"][1:]) != images.shape[1:3]:
        raise SystemExit(f"the model expects {cfg['input_size']} inputs; this benchmark feeds 32x32 CIFAR images "
                         "as they are (train f with a CIFAR stem, e.g. `timm-introspect train-backbone --cifar-stem`)")
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    f_out, h_out = [], []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i : i + batch_size]).permute(0, 3, 1, 2).float().div(255)
        out = head((x - mean) / std)
        f_out.append(out.base_logits)
        h_out.append(out.logits)
    return torch.cat(f_out), torch.cat(h_out)


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = ("f", "f+TS", "H")
    colors = {"f": "tab:red", "f+TS": "tab:orange", "H": "tab:blue"}
    sets = results["corrupted"]
    names = []

    fig, ax = plt.subplots(figsize=(5, 4))
    for m in models:
        ax.scatter([s[m]["accuracy"] for s in sets], [s[m]["ece"] for s in sets], s=12, alpha=0.6, label=m, c=colors[m])
    ax.set(xlabel="accuracy", ylabel="ECE (10 bins)", title="CIFAR-10-C: accuracy vs calibration")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_ece.png", dpi=120)
    names.append("accuracy_vs_ece.png")

    corruptions = sorted({s["corruption"] for s in sets})
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(corruptions)), 4))
    width = 0.8 / len(models)
    for k, m in enumerate(models):
        means = [np.mean([s[m]["accuracy"] for s in sets if s["corruption"] == c]) for c in corruptions]
        ax.bar(np.arange(len(corruptions)) + k * width, means, width, label=m, color=colors[m])
    ax.set_xticks(np.arange(len(corruptions)) + width, corruptions, rotation=45, ha="right")
    ax.set(ylabel="accuracy (mean over severities)", title="accuracy per corruption")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_per_corruption.png", dpi=120)
    names.append("accuracy_per_corruption.png")

    cols = min(4, len(corruptions))
    rows = int(np.ceil(len(corruptions) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.5 * rows), squeeze=False)
    for ax, c in zip(axes.flat, corruptions, strict=False):
        chosen = sorted((s for s in sets if s["corruption"] == c), key=lambda s: s["severity"])
        for m in models:
            ax.plot([s["severity"] for s in chosen], [s[m]["ece"] for s in chosen], marker="o", label=m, c=colors[m])
        ax.set(title=c, xlabel="severity", ylabel="ECE")
    for ax in list(axes.flat)[len(corruptions):]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(out / "ece_vs_severity.png", dpi=120)
    names.append("ece_vs_severity.png")
    return names


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    limit = args.limit or (500 if args.quick else None)
    corruptions = tuple(args.corruptions or (QUICK_CORRUPTIONS if args.quick else CORRUPTIONS))
    t0 = time.perf_counter()

    head = IntrospectiveHead.from_pretrained(args.model).eval()
    official = None
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
    else:
        clean, labels = load_images(args.data, "test", limit=limit, seed=args.seed).arrays()
    start, stop = (int(v) for v in args.calibration_rows.split(":"))
    train = load_images(args.data, "train")
    train.dataset = train.dataset.shuffle(seed=args.seed).select(range(start, stop))
    calib_images, calib_labels = train.arrays()

    f_cal, _ = predict(head, calib_images, args.batch_size)
    temperature = fit_temperature(f_cal, torch.as_tensor(calib_labels))

    def score(images: np.ndarray, y: np.ndarray) -> dict:
        f, h = predict(head, images, args.batch_size)
        y = torch.as_tensor(y)
        return {"f": classification_metrics(f, y), "f+TS": classification_metrics(f / temperature, y),
                "H": classification_metrics(h, y)}

    results = {"model": str(args.model), "data": args.data, "temperature": temperature,
               "calibration_rows": args.calibration_rows, "images_per_set": len(clean),
               "clean": score(clean, labels), "corrupted": []}
    jobs = [(c, s) for c in corruptions for s in args.severities]
    for c, s in tqdm(jobs, desc="CIFAR-10-C"):
        if official is not None:
            if c not in official:  # only one corruption's 50,000 images in memory at a time
                official, _ = load_cifar10c(args.cifar10c, (c,))
            rows = (s - 1) * n + subset
            images, y = official[c][rows], official_labels[rows]
        else:  # one seeded generator per corruption and severity: a set does not depend on the others run
            rng = np.random.default_rng([args.seed, CORRUPTIONS.index(c), s])
            images, y = corrupt(clean, c, s, rng, frost_dir=args.frost_dir), labels
        results["corrupted"].append({"corruption": c, "severity": s, **score(images, y)})
    keys = ("accuracy", "ece", "mce", "nll", "brier")
    common = [r for r in results["corrupted"] if r["corruption"] in COMMON]
    for m in ("f", "f+TS", "H"):
        results[f"mean_corrupted_{m}"] = {k: float(np.mean([r[m][k] for r in results["corrupted"]])) for k in keys}
        if common and len(common) < len(results["corrupted"]):  # the usual 15 x 5 mean, next to all sets'
            results[f"mean_common_{m}"] = {k: float(np.mean([r[m][k] for r in common])) for k in keys}
    results["seconds"] = time.perf_counter() - t0
    results["plots"] = plots(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=2))

    lines = [f"# f vs f+TS vs H on CIFAR-10-C ({len(jobs)} sets of {len(clean)} images; T = {temperature:.3f})", "",
             "| set | model | accuracy | ECE | MCE | NLL | Brier |", "| --- | --- | --- | --- | --- | --- | --- |"]
    summaries = [("clean", results["clean"]),
                 (f"corrupted (mean of {len(jobs)})", {m: results[f"mean_corrupted_{m}"] for m in ("f", "f+TS", "H")})]
    if "mean_common_f" in results:
        means = {m: results[f"mean_common_{m}"] for m in ("f", "f+TS", "H")}
        summaries.append((f"15 common (mean of {len(common)})", means))
    for name, per_model in summaries:
        for m, v in per_model.items():
            cells = " | ".join(f"{v[k]:.4f}" for k in ("accuracy", "ece", "mce", "nll", "brier"))
            lines.append(f"| {name} | {m} | {cells} |")
    lines += ["", "| corruption | severity | acc f | acc f+TS | acc H | ECE f | ECE f+TS | ECE H |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["corrupted"]:
        lines.append(f"| {r['corruption']} | {r['severity']} | {r['f']['accuracy']:.4f} | "
                     f"{r['f+TS']['accuracy']:.4f} | "
                     f"{r['H']['accuracy']:.4f} | {r['f']['ece']:.4f} | {r['f+TS']['ece']:.4f} | {r['H']['ece']:.4f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 4 + 3 * len(summaries)]))
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, plots {', '.join(results['plots'])} "
          f"({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
