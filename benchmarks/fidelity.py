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
   The same pass keeps every stage's pooled features (``LayerFeatures``), and, for the "augmented" variant,
   (z, h) of one AugMix copy of f's training images (``augmix_images``: no CIFAR-10-C operation).
3. The post-hoc baselines, fitted on the calibration half only (``fit_calibrators``): f+TS, f+ETS, DAC+TS and
   DAC+ETS, DAC's densities being k-NN distances (k = 50) to f's training images at every stage and the logits
   (``DensityScorer``). The deep ensemble averages the probabilities of every seed's f on the same images (the
   corrupted sets are drawn by ``--corruption-seed``, the same for every seed, so that the seeds' f see them).
4. Each variant trains an H on those features (``train_loop``, as ``train_head`` does) and is scored with the same
   calibrators applied to H's logits (H+TS, H+ETS, H+DAC+ETS: DAC with f's densities and H's logits), and
   "f+H", the mean of f+TS's and H+TS's probabilities; on clean test images, the mean over the corrupted sets and
   severity 5 (accuracy, ECE, NLL, Brier, and ECE's floor: ``ece_floor``, what a perfectly calibrated model with the
   same confidences measures on sets of that size, about 0.033 on 500 images and 0.017 on 2,000: the committed study
   measures the goal with ``--corruption-images 2000``).

Results go to ``<out>/seed<k>/<variant>.json`` as they finish (a killed run resumes), then
``<out>/fidelity.json``, ``fidelity.md`` (mean and standard deviation over seeds) and a plot
(``fidelity_report.py``).

    python benchmarks/fidelity.py --data ../shared/data/cifar10 --frost-dir ../shared/data/cifar10c-frost \\
        --seeds 0 1 2 --out runs/fidelity --backbone 0=runs/main/backbone --corruption-images 2000
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
from fidelity_report import aggregate, floor_table, goal_table, markdown, plot
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from timm_introspect import IntrospectiveHead, create_net
from timm_introspect.apps.active.views import backbone_outputs
from timm_introspect.core.calibration import fit_calibrators
from timm_introspect.core.metrics import classification_metrics, ece_floor
from timm_introspect.data.augmix import augmix_images
from timm_introspect.data.cifar10c import CORRUPTIONS, corrupt
from timm_introspect.data.images import load_images
from timm_introspect.io.checkpoint import give_default_mode
from timm_introspect.jobs.plots import pyplot
from timm_introspect.model.density import DensityScorer, LayerFeatures
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
    "augmented": dict(scale="standard", source="train+aug"),
    "augmented+strong": dict(scale="standard", source="train+aug+augstrong"),
    "train+held-out": dict(scale="standard", source="train+heldout"),
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
KEYS = ("accuracy", "ece", "nll", "brier", "ece_floor")
DEFAULT_VARIANTS = ("standardized", "augmented", "augmented+strong", "paper", "train+held-out")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="uoft-cs/cifar10")
    p.add_argument("--frost-dir", default=None, help="frost overlays; without them frost is left out")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--backbone", action="append", default=[], help="SEED=DIR: reuse f trained by `run --seed SEED`")
    p.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS),
                   help=f"H variants, of: {', '.join(VARIANTS)} (default: {', '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--corruption-images", type=int, default=500, help="test images each corrupted set is made from")
    p.add_argument("--corruption-seed", type=int, default=0,
                   help="draws the corrupted sets, the same for every seed (so that the deep ensemble can be scored)")
    p.add_argument("--knn-k", type=int, default=50, help="DAC's neighbour (its CIFAR-10 setting: 50)")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="f's label smoothing (default: the CPU recipe's, 0 as the paper's f; the first study: 0.1)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.corruption_images < 1 or args.knn_k < 1:
        p.error("--corruption-images and --knn-k must be at least 1")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return args


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


def save_outputs(path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write a seed's cached tensors (copies: safetensors refuses shared storage) with a new file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(path))
    give_default_mode(path)  # safetensors writes 0600
    return tensors


def cached_outputs(seed: int, args, train, test, corruptions) -> dict[str, torch.Tensor]:
    """z, h, labels and every stage's pooled features of every set for this seed's f, computed once
    (``outputs.safetensors``), and DAC's per-layer densities (``<set>:s``)."""
    path = Path(args.out) / f"seed{seed}" / "outputs.safetensors"
    if path.is_file():
        return safetensors.torch.load_file(str(path))
    model = backbone_for(seed, args, train).eval()
    f_train, held = train.split_holdout(0.1, seed)
    held_h, held_t = held.split_holdout(0.5, seed)
    sets = {"train": f_train.arrays(), "heldout": held_h.arrays(), "calib": held_t.arrays()}
    sets["aug"] = (augmix_images(sets["train"][0], seed), sets["train"][1])
    clean, labels = test.arrays()
    sets["test"] = (clean, labels)
    cs = args.corruption_seed
    subset = np.sort(np.random.default_rng(cs).permutation(len(labels))[: args.corruption_images])
    for c in tqdm(corruptions, desc=f"seed {seed}: CIFAR-10-C"):
        for s in range(1, 6):
            rng = np.random.default_rng([cs, CORRUPTIONS.index(c), s])
            sets[f"{c}/{s}"] = (corrupt(clean[subset], c, s, rng, frost_dir=args.frost_dir), labels[subset])
    tensors, layers = {}, LayerFeatures(model)
    for name, (images, y) in tqdm(sets.items(), desc=f"seed {seed}: f's outputs"):
        with layers.capture() as got:
            z, h = backbone_outputs(model, images)  # f's logits and its classifier's input, eval mode
        tensors.update({f"{name}:z": z, f"{name}:h": h, f"{name}:y": torch.as_tensor(y)})
        if name != "aug":
            tensors.update({f"{name}:L{i}": f for i, f in enumerate(got.features(z))})
    n_layers = len(layers.layers) + 1
    scorer = DensityScorer(args.knn_k).fit([tensors[f"train:L{i}"] for i in range(n_layers)])
    for name in sets:
        if name not in ("train", "aug"):
            tensors[f"{name}:s"] = scorer([tensors[f"{name}:L{i}"] for i in range(n_layers)])
    for key in [k for k in tensors if ":L" in k and not k.startswith("train:")]:
        del tensors[key]  # the bank stays (for other k); the others' densities are kept
    return save_outputs(path, tensors)


#: AugMix copies of f's training images beyond ``aug`` (in ``outputs.safetensors``): name -> (copy, magnitude)
EXTRA_COPIES = {"augstrong": (1, 9)}


def extra_outputs(seed: int, args, train, name: str) -> dict[str, torch.Tensor]:
    """f's z, h of another AugMix copy of its training images (``<name>.safetensors``), made on first use."""
    path = Path(args.out) / f"seed{seed}" / f"{name}.safetensors"
    if path.is_file():
        return safetensors.torch.load_file(str(path))
    copy, magnitude = EXTRA_COPIES[name]
    images, y = train.split_holdout(0.1, seed)[0].arrays()
    z, h = backbone_outputs(backbone_for(seed, args, train).eval(),
                            augmix_images(images, seed + 1000 * copy, magnitude=magnitude))
    return save_outputs(path, {f"{name}:z": z, f"{name}:h": h, f"{name}:y": torch.as_tensor(y)})


def corrupted_sets(data: dict[str, torch.Tensor]) -> list[str]:
    return sorted({k.split(":")[0] for k in data if "/" in k})


def metrics_of(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {**classification_metrics(logits, labels), "ece_floor": ece_floor(logits)}


def score_sets(logits_of, data: dict[str, torch.Tensor]) -> dict:
    """Metrics of ``logits_of(set) -> logits`` on the clean test set, the mean over corrupted sets, severity 5."""
    sets = corrupted_sets(data)
    per = {k: metrics_of(logits_of(k), data[f"{k}:y"]) for k in sets}

    def mean_of(keys):
        return {m: float(np.mean([per[s][m] for s in keys])) for m in KEYS}

    return {"clean": metrics_of(logits_of("test"), data["test:y"]), "corrupted": mean_of(sets),
            "severity5": mean_of([s for s in sets if s.endswith("/5")]), "sets": len(sets)}


def calibrated(name: str, logits_of, data: dict[str, torch.Tensor]) -> dict[str, dict]:
    """``name`` and its post-hoc calibrations (fitted on the calibration half), scored on every set."""
    cal = fit_calibrators(logits_of("calib"), data["calib:y"], data["calib:s"])
    out = {name: score_sets(logits_of, data)}
    for method, fn in cal.items():
        label = f"{name}+{method}" if name != "f" or not method.startswith("DAC") else method
        out[label] = score_sets(lambda k, fn=fn: fn(logits_of(k), data[f"{k}:s"]), data)
    return out


def baselines(seed: int, data: dict[str, torch.Tensor], out: Path) -> dict:
    """f and its post-hoc calibrations (``baselines.json``)."""
    path = out / "baselines.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = {"seed": seed, "methods": calibrated("f", lambda k: data[f"{k}:z"], data)}
    path.write_text(json.dumps(result, indent=2))
    return result


def ensemble(all_data: list[dict[str, torch.Tensor]]) -> dict:
    """The deep ensemble of the seeds' f: the mean of their softmax probabilities on the same images."""
    for d in all_data[1:]:
        if not torch.equal(d["test:y"], all_data[0]["test:y"]) or corrupted_sets(d) != corrupted_sets(all_data[0]):
            raise SystemExit("the seeds' corrupted sets differ: run every seed with the same --corruption-seed")

    def logits_of(k):
        return torch.stack([F.softmax(d[f"{k}:z"].double(), 1) for d in all_data]).mean(0).log().float()

    return {f"ensemble of {len(all_data)} f": score_sets(logits_of, all_data[0])}


def run_variant(name: str, cfg: dict, data: dict[str, torch.Tensor], seed: int, out: Path,
                model: torch.nn.Module, logits_path: Path | None = None) -> dict:
    """Train and score one variant's H on the cached (z, h) of f (``model``): r_x, M and the scale come from the
    head's own introspective pass from f's outputs and its one statistics routine. H's logits on every evaluated
    set go to ``logits_path`` (for metrics added later without training H again)."""
    sources = cfg["source"].split("+")
    z, h, y = (torch.cat([data[f"{s}:{k}"] for s in sources]) for k in "zhy")
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
    with torch.no_grad():
        h_logits = {k: net(head.net_inputs(head.introspect_outputs(data[f"{k}:z"], data[f"{k}:h"])))
                    for k in ["calib", "test", *corrupted_sets(data)]}
    if logits_path is not None:
        save_outputs(logits_path, h_logits)
    methods = calibrated("H", h_logits.__getitem__, data)
    ts_f = fit_calibrators(data["calib:z"], data["calib:y"], methods=["TS"])["TS"]
    ts_h = fit_calibrators(h_logits["calib"], data["calib:y"], methods=["TS"])["TS"]

    def mixed(k):  # f and H together: the mean of f+TS's and H+TS's probabilities
        p = (F.softmax(ts_f(data[f"{k}:z"]).double(), 1) + F.softmax(ts_h(h_logits[k]).double(), 1)) / 2
        return p.log().float()

    methods["f+H"] = score_sets(mixed, data)
    return {"variant": name, "seed": seed, "config": cfg, "target": target, "train_seconds": train_s,
            "H_train_images": len(y), "methods": methods}


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyplot()  # matplotlib is there before any work starts
    corruptions = [c for c in CORRUPTIONS if c != "frost" or args.frost_dir]
    train, test = load_images(args.data, "train"), load_images(args.data, "test")
    results, all_data = [], []
    for seed in args.seeds:
        data = cached_outputs(seed, args, train, test, corruptions)
        all_data.append({k: v for k, v in data.items() if k.endswith((":z", ":y"))})
        results.append({"variant": "baselines", **baselines(seed, data, out / f"seed{seed}")})
        for name in args.variants:
            path = out / f"seed{seed}" / f"{name.replace(' ', '_').replace('/', '-')}.json"
            if path.is_file():
                results.append(json.loads(path.read_text()))
                continue
            cfg = {**PAPER, **VARIANTS[name]}
            for extra in set(cfg["source"].split("+")) & set(EXTRA_COPIES):
                data.update(extra_outputs(seed, args, train, extra))
            result = run_variant(name, cfg, data, seed, out / f"seed{seed}", backbone_for(seed, args, train).eval(),
                                 path.with_suffix(".logits.safetensors"))
            path.write_text(json.dumps(result, indent=2))
            results.append(result)
            m = result["methods"]
            print(f"seed {seed} {name:18s} " + " | ".join(
                f"{k} C acc {m[k]['corrupted']['accuracy']:.4f} ECE {m[k]['corrupted']['ece']:.4f}"
                for k in ("H", "H+TS", "H+DAC+ETS")) + f" ({result['train_seconds']:.0f} s)", flush=True)
        del data
    ens = ensemble(all_data) if len(all_data) > 1 else {}
    agg = aggregate(results)
    (out / "fidelity.json").write_text(json.dumps({"args": vars(args), "aggregate": agg, "ensemble": ens,
                                                   "runs": results}, indent=2))
    table = markdown(agg, ens)
    (out / "fidelity.md").write_text(table + "\n\n" + goal_table(results) + "\n\n" + floor_table(results) + "\n")
    plot(agg, ens, out)
    print(table)
    return agg


if __name__ == "__main__":
    main()
