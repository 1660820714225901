"""Fidelity study: which choices let H beat f on shifted data without losing on clean data.

On the CPU recipe (``resnet10s_cifar``, ``backbone-cpu`` schedule), for each seed:

1. f is trained on the training split minus a seeded 10 % (as ``timm-introspect run --preset cpu`` does;
   ``--backbone SEED=DIR`` reuses a backbone that run wrote). The held-out 10 % is split in two halves:
   2,500 images for the "held-out H" variant (paper, Fig. 10) and 2,500 for temperature scaling, used by
   every variant, so that T never sees an image f or any H trained on.
2. f's logits z and pooled features h are computed once for f's training images, both held-out halves,
   the clean test set and every CIFAR-10-C set (19 corruptions x 5 severities, generated on the fly from a
   seeded subset of test images). f's classifier is one linear layer, so r_x for any loss comes from them:
   the head's introspective pass from f's outputs (``IntrospectiveHead.introspect_outputs``), M and the
   scale from its one statistics routine (``fit_statistics``), as every other job fits them.
3. Each variant trains an H on those features (``train_loop``, as ``train_head`` does) and is scored: f, f+TS
   (T on the calibration half), H and H+TS (its own T on the same half), on clean test images, the mean over
   the corrupted sets and severity 5.

Results go to ``<out>/seed<k>/<variant>.json`` as they finish (a killed run resumes), then
``<out>/fidelity.json``, ``fidelity.md`` (mean and standard deviation over seeds) and plots.

    python benchmarks/fidelity.py --data ../shared/data/cifar10 --frost-dir ../shared/data/cifar10c-frost \\
        --seeds 0 1 2 --out runs/fidelity --backbone 0=runs/main/backbone
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from timm_introspect import IntrospectiveHead, create_net
from timm_introspect.apps.active.views import backbone_outputs
from timm_introspect.core.metrics import classification_metrics, fit_temperature
from timm_introspect.data.cifar10c import CORRUPTIONS, corrupt
from timm_introspect.data.images import load_images
from timm_introspect.jobs.plots import pyplot
from timm_introspect.training.loop import Schedule, make_accelerator, train_loop
from timm_introspect.training.pipeline import load_backbone, train_backbone
from timm_introspect.training.recipes import PRESETS

PAPER = dict(source="train", loss="mse-M", scale="maxabs", net="mlp", hidden=(300, 100), act="Sigmoid", drop=0.0,
             epochs=20, lr=0.1, wd=5e-3)
#: name -> what differs from the paper's H (Table 3: MSE-M, [-1, 1] scaling, MLP 300-100 with sigmoid, SGD, wd 5e-3)
VARIANTS: dict[str, dict] = {
    "paper": {},
    "held-out features": dict(source="heldout"),
    "standardized": dict(scale="standard"),
    "no scaling": dict(scale="none"),
    "CE-M": dict(loss="ce-M"),
    "MSE (c=1)": dict(loss="mse"),
    "BCE-M": dict(loss="bce-M"),
    "wide 1000-300": dict(hidden=(1000, 300)),
    "shallow 300": dict(hidden=(300,)),
    "5 epochs": dict(epochs=5),
    "dropout 0.3": dict(drop=0.3),
    "wd 5e-4": dict(wd=5e-4),
    "ReLU": dict(act="ReLU"),
    "factorized": dict(net="factorized"),
}
MODELS = ("f", "f+TS", "H", "H+TS")
KEYS = ("accuracy", "ece", "nll", "brier")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="uoft-cs/cifar10")
    p.add_argument("--frost-dir", default=None, help="frost overlays; without them frost is left out")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--backbone", action="append", default=[], help="SEED=DIR: reuse f trained by `run --seed SEED`")
    p.add_argument("--variants", nargs="*", default=None, help=f"default: all of {', '.join(VARIANTS)}")
    p.add_argument("--corruption-images", type=int, default=500, help="test images each corrupted set is made from")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="f's label smoothing (default: the CPU recipe's, 0 as the paper's f; the first study: 0.1)")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


@torch.no_grad()
def backbone_for(seed: int, args, train) -> torch.nn.Module:
    given = dict(b.split("=", 1) for b in args.backbone)
    if str(seed) in given:
        folder = Path(given[str(seed)])
        info = json.loads((folder / "training.json").read_text())
        if info.get("seed") != seed or info.get("holdout") != 0.1 or info.get("limit") is not None:
            raise SystemExit(f"{folder} was not trained with --seed {seed} and a 0.1 holdout of the full split")
        if args.label_smoothing is not None and info["schedule"]["label_smoothing"] != args.label_smoothing:
            raise SystemExit(f"{folder}'s f was trained with label smoothing {info['schedule']['label_smoothing']}, "
                             f"not --label-smoothing {args.label_smoothing}")
        return load_backbone(folder)
    cpu = PRESETS["cpu"]  # the main job's recipe: architecture, schedule, batch size
    schedule = dict(cpu["backbone"])
    if args.label_smoothing is not None:
        schedule["label_smoothing"] = args.label_smoothing
    return train_backbone(train, Path(args.out) / f"seed{seed}" / "backbone", cpu["model"], True,
                          Schedule(**schedule), cpu["batch_size"], seed, holdout=0.1, channels_last=True)


def cached_outputs(seed: int, args, train, test, corruptions) -> dict[str, torch.Tensor]:
    """z, h and labels of every set for this seed's f, computed once (``outputs.safetensors``)."""
    path = Path(args.out) / f"seed{seed}" / "outputs.safetensors"
    if path.is_file():
        return safetensors.torch.load_file(str(path))
    model = backbone_for(seed, args, train).eval()
    f_train, held = train.split_holdout(0.1, seed)
    held_h, held_t = held.split_holdout(0.5, seed)
    sets = {"train": f_train.arrays(), "heldout": held_h.arrays(), "calib": held_t.arrays()}
    clean, labels = test.arrays()
    sets["test"] = (clean, labels)
    subset = np.sort(np.random.default_rng(seed).permutation(len(labels))[: args.corruption_images])
    for c in tqdm(corruptions, desc=f"seed {seed}: CIFAR-10-C"):
        for s in range(1, 6):
            rng = np.random.default_rng([seed, CORRUPTIONS.index(c), s])
            sets[f"{c}/{s}"] = (corrupt(clean[subset], c, s, rng, frost_dir=args.frost_dir), labels[subset])
    tensors = {}
    for name, (images, y) in tqdm(sets.items(), desc=f"seed {seed}: f's outputs"):
        z, h = backbone_outputs(model, images)  # f's logits and its classifier's input, eval mode
        tensors.update({f"{name}:z": z, f"{name}:h": h, f"{name}:y": torch.as_tensor(y)})
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return tensors


def run_variant(name: str, cfg: dict, data: dict[str, torch.Tensor], seed: int, out: Path,
                model: torch.nn.Module) -> dict:
    """Train and score one variant's H on the cached (z, h) of f (``model``): r_x, M and the scale come from the
    head's own introspective pass from f's outputs and its one statistics routine."""
    source = cfg["source"]
    z, h, y = data[f"{source}:z"], data[f"{source}:h"], data[f"{source}:y"]
    num_classes, dim = z.shape[1], h.shape[1]
    kwargs = dict(hidden=cfg["hidden"], act_layer=cfg["act"])
    if cfg["drop"]:
        kwargs["drop_rate"] = cfg["drop"]
    if cfg["net"] == "factorized":
        kwargs = dict(hidden=cfg["hidden"][1:], act_layer=cfg["act"], rank=cfg["hidden"][0])
    net = create_net(cfg["net"], [(num_classes, dim)], num_classes, **kwargs)
    head = IntrospectiveHead.wrap(model, loss=cfg["loss"], introspective_net=net, scale=cfg["scale"])
    head.fit_statistics(logits=[z], features=lambda: [head.raw_inputs(head.introspect_outputs(z, h))], sync=False)
    target = float(head.target_value)
    scaled = head.net_inputs(head.introspect_outputs(z, h))
    columns = [*next(iter(scaled.values()))] if isinstance(scaled, dict) else [scaled]
    loader = DataLoader(TensorDataset(*columns, y), batch_size=256, shuffle=True)
    factor_name = head.classifiers[0].name

    def loss_fn(model, batch):
        *xs, labels = batch
        inputs = {factor_name: (xs[0], xs[1])} if len(xs) == 2 else xs[0]
        return F.cross_entropy(model(inputs), labels)

    schedule = Schedule(epochs=cfg["epochs"], lr=cfg["lr"], weight_decay=cfg["wd"], kind="onecycle")
    accelerator = make_accelerator(out, seed)
    t0 = time.perf_counter()
    net = train_loop(accelerator, net, loader, loss_fn, schedule, None, f"H {name}").eval()
    train_s = time.perf_counter() - t0

    @torch.no_grad()
    def h_logits(key: str) -> torch.Tensor:
        return net(head.net_inputs(head.introspect_outputs(data[f"{key}:z"], data[f"{key}:h"])))

    t_f = fit_temperature(data["calib:z"], data["calib:y"])
    t_h = fit_temperature(h_logits("calib"), data["calib:y"])

    def score(key: str) -> dict:
        zf, zh, labels = data[f"{key}:z"], h_logits(key), data[f"{key}:y"]
        return {"f": classification_metrics(zf, labels), "f+TS": classification_metrics(zf / t_f, labels),
                "H": classification_metrics(zh, labels), "H+TS": classification_metrics(zh / t_h, labels)}

    sets = sorted({k.split(":")[0] for k in data if "/" in k})
    corrupted = {k: score(k) for k in sets}

    def mean_of(keys):
        return {m: {k: float(np.mean([corrupted[s][m][k] for s in keys])) for k in KEYS} for m in MODELS}

    return {"variant": name, "seed": seed, "config": cfg, "target": target, "T_f": t_f, "T_H": t_h,
            "train_seconds": train_s, "H_train_images": len(y), "clean": score("test"),
            "corrupted": mean_of(sets), "severity5": mean_of([s for s in sets if s.endswith("/5")]),
            "sets": len(sets)}


def aggregate(results: list[dict]) -> dict:
    table: dict = {}
    for r in results:
        for part in ("clean", "corrupted", "severity5"):
            for m in MODELS:
                for k in KEYS:
                    table.setdefault(r["variant"], {}).setdefault(part, {}).setdefault(m, {}).setdefault(k, []).append(
                        r[part][m][k])
    return {v: {p: {m: {k: (float(np.mean(x)), float(np.std(x, ddof=1)) if len(x) > 1 else 0.0, len(x))
                            for k, x in ks.items()}
                    for m, ks in ms.items()} for p, ms in parts.items()} for v, parts in table.items()}


def markdown(agg: dict) -> str:
    head = ("| H variant | clean acc f | clean acc H | C acc f | C acc H | C ECE f | C ECE f+TS | C ECE H | C ECE H+TS "
            "| C NLL f+TS | C NLL H | sev5 acc f | sev5 acc H | sev5 ECE f+TS | sev5 ECE H |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]

    def cell(v, part, m, k):
        mean, std, _ = agg[v][part][m][k]
        return f"{mean:.4f} ± {std:.4f}" if k != "accuracy" else f"{100 * mean:.2f} ± {100 * std:.2f}"

    for v in agg:
        cells = [cell(v, "clean", "f", "accuracy"), cell(v, "clean", "H", "accuracy"),
                 cell(v, "corrupted", "f", "accuracy"), cell(v, "corrupted", "H", "accuracy"),
                 cell(v, "corrupted", "f", "ece"), cell(v, "corrupted", "f+TS", "ece"),
                 cell(v, "corrupted", "H", "ece"), cell(v, "corrupted", "H+TS", "ece"),
                 cell(v, "corrupted", "f+TS", "nll"), cell(v, "corrupted", "H", "nll"),
                 cell(v, "severity5", "f", "accuracy"), cell(v, "severity5", "H", "accuracy"),
                 cell(v, "severity5", "f+TS", "ece"), cell(v, "severity5", "H", "ece")]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(agg: dict, out: Path) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, part in zip(axes, ("clean", "corrupted"), strict=True):
        for v in agg:
            acc = agg[v][part]["H"]["accuracy"]
            ece = agg[v][part]["H"]["ece"]
            ax.errorbar(acc[0], ece[0], xerr=acc[1], yerr=ece[1], fmt="o", ms=4, capsize=2)
            ax.annotate(v, (acc[0], ece[0]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        first = next(iter(agg))
        for m, marker, color in (("f", "s", "tab:red"), ("f+TS", "D", "tab:orange")):
            acc, ece = agg[first][part][m]["accuracy"], agg[first][part][m]["ece"]
            ax.errorbar(acc[0], ece[0], xerr=acc[1], yerr=ece[1], fmt=marker, color=color, ms=7, label=m, capsize=2)
        ax.set(xlabel="accuracy", ylabel="ECE", title=f"H variants vs f ({part}; mean ± std over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fidelity.png", dpi=120)
    return "fidelity.png"


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyplot()  # matplotlib is there before any work starts
    corruptions = [c for c in CORRUPTIONS if c != "frost" or args.frost_dir]
    names = args.variants or list(VARIANTS)
    train, test = load_images(args.data, "train"), load_images(args.data, "test")
    results = []
    for seed in args.seeds:
        data = cached_outputs(seed, args, train, test, corruptions)
        for name in names:
            path = out / f"seed{seed}" / f"{name.replace(' ', '_').replace('/', '-')}.json"
            if path.is_file():
                results.append(json.loads(path.read_text()))
                continue
            result = run_variant(name, {**PAPER, **VARIANTS[name]}, data, seed, out / f"seed{seed}",
                                 backbone_for(seed, args, train).eval())
            path.write_text(json.dumps(result, indent=2))
            results.append(result)
            c = result["corrupted"]
            print(f"seed {seed} {name:18s} clean acc f {result['clean']['f']['accuracy']:.4f} "
                  f"H {result['clean']['H']['accuracy']:.4f} | C acc f {c['f']['accuracy']:.4f} "
                  f"H {c['H']['accuracy']:.4f} | C ECE f {c['f']['ece']:.4f} f+TS {c['f+TS']['ece']:.4f} "
                  f"H {c['H']['ece']:.4f} ({result['train_seconds']:.0f} s)", flush=True)
    agg = aggregate(results)
    (out / "fidelity.json").write_text(json.dumps({"args": vars(args), "aggregate": agg, "runs": results}, indent=2))
    table = markdown(agg)
    (out / "fidelity.md").write_text(table + "\n")
    plot(agg, out)
    print(table)
    return agg


if __name__ == "__main__":
    main()
