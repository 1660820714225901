"""``timm-introspect``: train f, fit H, evaluate, or all three in one run.

    timm-introspect run --data ../shared/data/cifar10 --preset quick --out runs/quick
    timm-introspect train-backbone --data uoft-cs/cifar10 --model resnet18 --cifar-stem --out runs/f
    timm-introspect fit --backbone runs/f --data uoft-cs/cifar10 --loss mse-M --out runs/introspective
    timm-introspect fit --backbone hf-hub:timm/resnet18.a1_in1k --data imagenet-folder/ --net factorized --out runs/in1k
    timm-introspect evaluate --model runs/introspective --data uoft-cs/cifar10 --split test
    timm-introspect cifar10c --data uoft-cs/cifar10 --frost-dir frost/ --out CIFAR-10-C
    timm-introspect imagenetc --data imagenet-val/ --split validation --frost-dir frost/ --out ImageNet-C
    timm-introspect ood --model runs/introspective --ood ../shared/data/ood/dtd gaussian uniform cifar10c
    timm-introspect explain --model runs/introspective --images cat.png --contrast all --out maps/

Every command runs under ``accelerate launch`` / ``torchrun`` as well (several GPUs or processes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .data.images import load_images
from .errors import IntrospectionError
from .training.loop import Schedule
from .training.recipes import PRESETS


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="uoft-cs/cifar10", help="Hub dataset id or local folder (Parquet / images)")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--batch-size", type=_positive, default=None)
    p.add_argument("--workers", type=_non_negative, default=0, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", default=None,
                   help="only these classes (indices or names), relabeled 0..k-1 (CIFAR-6/4: --classes 0 1 2 3 4 5)")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=list(PRESETS), default="paper")
    p.add_argument("--train-split", default="train")
    p.add_argument("--train-limit", type=_positive, default=None, help="use a random subset of this many images")
    p.add_argument("--epochs", type=_positive, default=None)
    p.add_argument("--lr", type=_positive_float, default=None)
    p.add_argument("--schedule", choices=["paper", "onecycle"], default=None)
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")


def _net_arg(p: argparse.ArgumentParser) -> None:
    from .nets.registry import list_nets

    p.add_argument("--net", choices=list_nets(), default="mlp",
                   help="H: the paper's MLP on r_x, or an H on r_x's factors (delta, h) that never materializes it")
    p.add_argument("--scale", choices=["maxabs", "standard", "none"], default=None,
                   help="feature scaling before H: the paper's per-dimension [-1, 1] (maxabs), standardization, or "
                        "none (default: the preset's)")


def _backbone_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--backbone", required=required,
                   help="f: a folder in timm's layout (train-backbone, save_for_hf), hf-hub:<repo> (a timm model on "
                        "the Hub), or a timm architecture name with --checkpoint"
                        + ("" if required else "; evaluates f alone (instead of --model)"))
    p.add_argument("--checkpoint", default=None, help="f's weights (.safetensors) for an architecture name --backbone")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timm-introspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-backbone", help="train f, a timm classifier, from scratch")
    _data_args(p)
    _train_args(p)
    p.add_argument("--model", default=None, help="timm architecture (default: the preset's)")
    p.add_argument("--cifar-stem", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--holdout", type=_fraction, default=0.0,
                   help="train f without this fraction of the training images, kept for `fit --use-holdout`")
    p.add_argument("--out", required=True)

    p = sub.add_parser("fit", help="fit H on f's introspective features")
    _data_args(p)
    _train_args(p)
    _backbone_args(p, required=True)
    p.add_argument("--loss", default="mse-M", help="ce, mse, bce, l1, smooth_l1, nll, soft_margin; '-M' for target M")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: <out>/feature-cache)")
    p.add_argument("--use-holdout", action="store_true",
                   help="fit H on the images f did not see (train-backbone --holdout; paper Fig. 10)")
    _net_arg(p)
    p.add_argument("--out", required=True)

    p = sub.add_parser("evaluate", help="accuracy and calibration of f and H")
    _data_args(p)
    p.add_argument("--model", default=None, help="folder or Hub repo (hf-hub:<repo>) of an introspective model")
    _backbone_args(p, required=False)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=_positive, default=None)
    p.add_argument("--out", default=None, help="metrics JSON (default: <model folder>/metrics-<split>.json)")

    p = sub.add_parser("run", help="the main job: train f, fit H, evaluate f, f+TS and H (clean and CIFAR-10-C)")
    _data_args(p)
    p.add_argument("--preset", choices=list(PRESETS), default="cpu")
    p.add_argument("--loss", default="mse-M")
    _net_arg(p)
    p.add_argument("--test-split", default="test")
    p.add_argument("--corruptions", nargs="*", default=None,
                   help="CIFAR-10-C corruptions to evaluate (default with --frost-dir: all 19; without: the 18 others)")
    p.add_argument("--frost-dir", default=None, help="folder with the frost overlays frost1.png ... frost5.jpg")
    p.add_argument("--corruption-images", type=_positive, default=None,
                   help="seeded subset of test images the corrupted sets are made from (preset: 1000)")
    p.add_argument("--out", required=True)

    p = sub.add_parser("cifar10c", help="generate CIFAR-10-C (19 corruptions x 5 severities) in the release's layout")
    p.add_argument("--data", default="uoft-cs/cifar10", help="CIFAR-10 (Hub dataset id or local folder)")
    p.add_argument("--split", default="test")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--frost-dir", default=None, help="folder with the frost overlays frost1.png ... frost5.jpg")
    p.add_argument("--corruptions", nargs="*", default=None, help="default: all 19")
    p.add_argument("--limit", type=_positive, default=None, help="only this many test images (seeded subset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p = sub.add_parser("imagenetc", help="generate ImageNet-C (resize 256, crop 224, the ImageNet parameters) in the "
                                         "release's layout <corruption>/<severity>/<wnid>/<file>.JPEG")
    p.add_argument("--data", required=True, help="ImageNet validation images (Hub dataset id or local folder)")
    p.add_argument("--split", default="validation")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--frost-dir", default=None, help="folder with the frost overlays frost1.png ... frost5.jpg")
    p.add_argument("--corruptions", nargs="*", default=None, help="default: all 19")
    p.add_argument("--severities", nargs="*", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--limit", type=_positive, default=None, help="only this many images (seeded subset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    _active_parser(sub)
    _explain_parser(sub)
    p = sub.add_parser("ood", help="OOD detection: every detector on f and H, vanilla and attacked; prints the table")
    ood_arguments(p)
    p.add_argument("--out", default=None, help="folder for table.md, results.json, sets/*.json (default: print only)")
    p.add_argument("--plots", action="store_true", help="also write score histograms and ROC curves to --out")
    return parser


def ood_arguments(p: argparse.ArgumentParser, ood_default: list[str] | None = None) -> None:
    """The OOD job's arguments (``timm-introspect ood`` and ``benchmarks/ood.py``)."""
    p.add_argument("--model", required=True, help="folder or Hub repo of an introspective model")
    p.add_argument("--ood", nargs="+", required=ood_default is None, default=ood_default,
                   help="OOD sets: gaussian, uniform, cifar10c (severity 5), open-set (the classes a class-subset "
                        "model was not trained on), or a dataset folder / Hub id (e.g. ../shared/data/ood/dtd)")
    p.add_argument("--data", default=None, help="ID dataset (default: the one the model records)")
    p.add_argument("--split", default="test", help="ID test split")
    p.add_argument("--train-split", default="train", help="the split the feature detectors are fitted on")
    p.add_argument("--id-images", type=_positive, default=1000)
    p.add_argument("--ood-images", type=_positive, default=1000, help="images per OOD set (at most)")
    p.add_argument("--fit-images", type=_positive, default=10000, help="training images to fit detectors on")
    p.add_argument("--conditions", nargs="+", choices=["vanilla", "attack-f", "attack-H"],
                   default=["vanilla", "attack-f", "attack-H"])
    p.add_argument("--quick", action="store_true", help="48 ID and 48 OOD images per set, 1,000 to fit: minutes")
    p.add_argument("--ood-split", default="test", help="split of dataset OOD sets")
    p.add_argument("--ood-image-column", default=None, help="image column of dataset OOD sets (default: found)")
    p.add_argument("--ood-config", default=None, help="configuration of Hub OOD sets (e.g. cropped_digits for SVHN)")
    p.add_argument("--frost-dir", default=None, help="frost overlays, to include frost in cifar10c")
    p.add_argument("--k", type=_positive, default=50, help="KNN's neighbour")
    p.add_argument("--batch-size", type=_positive, default=250)
    p.add_argument("--seed", type=int, default=0)


def ood_job_kwargs(args: argparse.Namespace) -> dict:
    """:func:`timm_introspect.apps.ood.run_ood`'s keyword arguments from :func:`ood_arguments`' namespace."""
    return dict(data=args.data, split=args.split, train_split=args.train_split, id_images=args.id_images,
                ood_images=args.ood_images, fit_images=args.fit_images, conditions=args.conditions, quick=args.quick,
                batch_size=args.batch_size, k=args.k, ood_split=args.ood_split, ood_image_column=args.ood_image_column,
                ood_config=args.ood_config, frost_dir=args.frost_dir, seed=args.seed)


def cmd_ood(args: argparse.Namespace) -> dict:
    from .apps.ood import run_ood

    if args.plots and not args.out:
        raise SystemExit("--plots needs --out (the folder the PNGs go to)")
    result = run_ood(args.model, args.ood, out=args.out, plots=args.plots, **ood_job_kwargs(args))
    print(result["table"])
    if args.out:
        print(f"written to {args.out}")
    return result


def _explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM and 'why P, rather than Q?' maps for image files, one PNG each")
    p.add_argument("--model", required=True, help="folder (save_pretrained or train-backbone), hf-hub:<repo>, or a "
                                                  "timm architecture name with --checkpoint")
    p.add_argument("--checkpoint", default=None, help="f's weights (.safetensors) for an architecture name --model")
    p.add_argument("--images", nargs="+", required=True, help="image files (PNG, JPEG)")
    p.add_argument("--contrast", nargs="*", default=None,
                   help="contrast classes Q: 'all', or class names / indices (default: each image's runner-up)")
    p.add_argument("--target-layer", default=None, help="module path to explain at (default: the final feature map)")
    p.add_argument("--method", choices=["auto", "closed-form", "autograd"], default="auto")
    p.add_argument("--columns", type=_positive, default=6, help="panels per row of the grid")
    p.add_argument("--out", required=True, help="folder for the PNG grids and explanations.json")


def _active_parser(sub) -> None:
    from .apps.active.config import PROTOCOLS
    from .apps.active.strategies import list_strategies

    p = sub.add_parser("active", help="active learning: query through f or through H (paper, Table 1)")
    p.add_argument("--data", default="uoft-cs/cifar10", help="Hub dataset id or local folder (Parquet / images)")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--strategy", choices=list_strategies(), required=True)
    p.add_argument("--via", choices=["f", "H"], default="f", help="query through f or through H")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="cpu",
                   help="paper: ResNet-18, 100 + 1000 x 20 (GPU); cpu: resnet10s_cifar, 100 + 400 x 5; smoke")
    p.add_argument("--seed", type=int, default=0, help="initial labels, training, dropout masks, the strategy's draws")
    p.add_argument("--data-seed", type=int, default=0, help="the pool and test subsets and the Gaussian noise")
    p.add_argument("--pool", type=_positive, default=None, help="pool: a seeded subset of this many training images")
    p.add_argument("--test", type=_positive, default=None, help="a seeded subset of this many test images")
    p.add_argument("--noise", choices=["all", "spread", "none"], default=None,
                   help="Gaussian noise: all 5 severities per test image, one severity per image, or none")
    p.add_argument("--initial", type=_positive, default=None, help="random labels before the first round")
    p.add_argument("--query-size", type=_positive, default=None, help="images queried per round")
    p.add_argument("--rounds", type=_non_negative, default=None, help="query rounds")
    p.add_argument("--reset", action=argparse.BooleanOptionalAction, default=None,
                   help="re-initialize f every round (default, as the BADGE code) or continue from the last round")
    p.add_argument("--model", default=None, help="timm architecture for 32 px input (default: the protocol's)")
    p.add_argument("--epochs", type=_positive, default=None, help="f's epochs per round (at least --min-steps steps)")
    p.add_argument("--min-steps", type=_non_negative, default=None)
    p.add_argument("--batch-size", type=_positive, default=None)
    p.add_argument("--mc-passes", type=_positive, default=None, help="BALD's Monte Carlo dropout passes")
    p.add_argument("--scale", choices=["maxabs", "standard", "none"], default=None,
                   help="r_x scaling before H (default: the paper's maxabs)")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None)
    p.add_argument("--out", required=True)


def _schedule(preset: dict, kind: str, args: argparse.Namespace) -> Schedule:
    values = dict(preset[kind])
    if getattr(args, "epochs", None) is not None:
        values["epochs"] = args.epochs
    if getattr(args, "lr", None) is not None:
        values["lr"] = args.lr
    if getattr(args, "schedule", None) is not None:
        values["kind"] = args.schedule
    return Schedule(**values)


def _load(args: argparse.Namespace, split: str, limit: int | None):
    return load_images(args.data, split, args.image_column, args.label_column, limit=limit, seed=args.seed,
                       classes=getattr(args, "classes", None))


def cmd_train_backbone(args: argparse.Namespace) -> None:
    from .training.pipeline import train_backbone

    preset = PRESETS[args.preset]
    limit = args.train_limit or preset["train_limit"]
    train = _load(args, args.train_split, limit)
    train_backbone(
        train, args.out, model_name=args.model or preset["model"],
        cifar_stem=preset["cifar_stem"] if args.cifar_stem is None else args.cifar_stem,
        schedule=_schedule(preset, "backbone", args), batch_size=args.batch_size or preset["batch_size"],
        seed=args.seed, mixed_precision=args.mixed_precision, workers=args.workers, holdout=args.holdout, limit=limit,
    )


def cmd_fit(args: argparse.Namespace) -> None:
    from .io.backbones import resolve_backbone
    from .training.pipeline import fit_head, heldout_images

    preset = PRESETS[args.preset]
    backbone = resolve_backbone(args.backbone, args.checkpoint)  # before any data: a bad f fails at once
    limit = args.train_limit or preset["train_limit"]
    train = _load(args, args.train_split, limit)
    if args.use_holdout:
        train = heldout_images(args.backbone, train, args.train_split, limit, args.seed)
    fit_head(
        backbone, train, args.out, loss=args.loss, schedule=_schedule(preset, "head", args),
        batch_size=args.batch_size or preset["batch_size"], seed=args.seed, cache_dir=args.cache_dir,
        mixed_precision=args.mixed_precision, workers=args.workers, net=args.net,
        scale=args.scale or preset.get("scale", "maxabs"),
    )


def cmd_evaluate(args: argparse.Namespace) -> dict:
    from accelerate import Accelerator

    from .io.backbones import HF_HUB_PREFIX, resolve_backbone
    from .model.head import IntrospectiveHead
    from .training.pipeline import evaluate, evaluate_backbone

    if (args.model is None) == (args.backbone is None):
        raise SystemExit("evaluate needs either --model (an introspective model) or --backbone (f alone)")
    accelerator = Accelerator()
    if args.model is not None:
        head = IntrospectiveHead.from_pretrained(args.model.removeprefix(HF_HUB_PREFIX))
        images = _load(args, args.split, args.limit)
        metrics = evaluate(head, images, batch_size=args.batch_size or 256, accelerator=accelerator,
                           workers=args.workers)
    else:
        model = resolve_backbone(args.backbone, args.checkpoint)
        metrics = evaluate_backbone(model, _load(args, args.split, args.limit), batch_size=args.batch_size or 256,
                                    accelerator=accelerator, workers=args.workers)
    where = args.model or args.backbone
    default_out = Path(where) / f"metrics-{args.split}.json" if Path(where).is_dir() else None
    out = Path(args.out) if args.out else default_out
    if accelerator.is_main_process:
        _print_metrics(metrics)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"data": args.data, "split": args.split, "metrics": metrics}, indent=2))
            print(f"metrics written to {out}")
    return metrics


def _print_metrics(metrics: dict[str, dict[str, float]]) -> None:
    for who, values in metrics.items():
        print(f"{who}: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()))


def cmd_run(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from .data.cifar10c import CORRUPTIONS
    from .jobs.main import run

    preset = PRESETS[args.preset]
    holdout = preset.get("holdout", 0.0)
    corruptions = args.corruptions
    if corruptions is None:
        corruptions = [c for c in CORRUPTIONS if c != "frost" or args.frost_dir] if holdout else []
    _check_corruptions(corruptions, args.frost_dir)
    result = run(
        _load(args, "train", preset["train_limit"]), _load(args, args.test_split, preset["test_limit"]), args.out,
        preset["model"], preset["cifar_stem"], Schedule(**preset["backbone"]), Schedule(**preset["head"]),
        batch_size=args.batch_size or preset["batch_size"], seed=args.seed, loss=args.loss, net=args.net,
        scale=args.scale or preset.get("scale", "maxabs"),
        workers=args.workers, limit=preset["train_limit"], holdout=holdout, corruptions=corruptions,
        corruption_images=args.corruption_images or preset.get("corruption_images", 1000), frost_dir=args.frost_dir,
        channels_last=preset.get("channels_last", False),
    )
    if PartialState().is_main_process:
        if "table" in result:
            print(result["table"])
            if "frost" not in corruptions and corruptions:
                print("(frost left out: pass --frost-dir to include it)")
        else:
            _print_metrics(result["metrics"])
        times = ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in result["times"].items())
        print(f"model: {Path(args.out) / 'introspective'}   metrics: {Path(args.out) / 'metrics.json'}   ({times})")


def _check_corruptions(corruptions, frost_dir: str | None) -> None:
    """Refuse unknown corruption names, and frost without its overlay images, before any work."""
    from .data.cifar10c import CORRUPTIONS

    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise SystemExit(f"unknown corruption(s) {', '.join(unknown)}; choose from {', '.join(CORRUPTIONS)}")
    if "frost" in corruptions and not frost_dir:
        raise SystemExit("frost needs its overlay images: pass --frost-dir (a folder with frost1.png ... frost5.jpg), "
                         "or leave frost out with --corruptions")


def cmd_cifar10c(args: argparse.Namespace) -> dict:
    from .data.cifar10c import CORRUPTIONS, write_official

    corruptions = tuple(args.corruptions or CORRUPTIONS)
    _check_corruptions(corruptions, args.frost_dir)
    pixels, labels = _load(args, args.split, args.limit).arrays()
    start = time.perf_counter()
    written = write_official(args.out, pixels, labels, corruptions, seed=args.seed, frost_dir=args.frost_dir)
    written.update(data=args.data, split=args.split, images=len(pixels), seed=args.seed,
                   total_seconds=time.perf_counter() - start)
    return _report_generation(args, written, f"{len(corruptions)} corruptions x 5 severities x {len(pixels)} images",
                              " (md5 sums in generation.json)")


def _report_generation(args: argparse.Namespace, written: dict, what: str, extra: str = "") -> dict:
    """Write ``generation.json`` and print the seconds per corruption of a corruption generator."""
    Path(args.out, "generation.json").write_text(json.dumps(written, indent=2))
    for name, sec in written["seconds"].items():
        print(f"{name:18s} {sec:7.1f} s")
    if written["reused"]:
        print(f"kept from an earlier run with the same images and seed: {', '.join(written['reused'])}")
    print(f"{what} in {written['total_seconds']:.0f} s -> {args.out}{extra}")
    return written


def cmd_imagenetc(args: argparse.Namespace) -> dict:
    from .data.cifar10c import CORRUPTIONS, imagenet_preprocess, write_imagenet_c

    corruptions = tuple(args.corruptions or CORRUPTIONS)
    _check_corruptions(corruptions, args.frost_dir)
    images = _load(args, args.split, args.limit)
    pixels, labels = images.arrays(resize=imagenet_preprocess)
    # class folders: the dataset's class names (ImageNet's are wnids on the Hub's imagenet-1k), else numbers
    start = time.perf_counter()
    written = write_imagenet_c(args.out, pixels, labels, classes=images.label_names, corruptions=corruptions,
                               severities=args.severities, seed=args.seed, frost_dir=args.frost_dir)
    written.update(data=args.data, split=args.split, seed=args.seed, total_seconds=time.perf_counter() - start)
    return _report_generation(args, written, f"{len(corruptions)} corruptions x {len(args.severities)} severities x "
                                             f"{len(pixels)} images")


def cmd_active(args: argparse.Namespace) -> dict:
    from .apps.active import history_table, run_active

    result = run_active(
        args.data, args.out, args.strategy, args.via, protocol=args.protocol, seed=args.seed, pool=args.pool,
        test=args.test, noise=args.noise, data_seed=args.data_seed, image_column=args.image_column,
        label_column=args.label_column, initial=args.initial, query_size=args.query_size, rounds=args.rounds,
        reset=args.reset, model=args.model, epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size,
        mc_passes=args.mc_passes, mixed_precision=args.mixed_precision, scale=args.scale,
    )
    print(history_table(result))
    print(f"rounds: {Path(args.out) / 'rounds'}   result: {Path(args.out) / 'result.json'}")
    return result


def cmd_explain(args: argparse.Namespace) -> list[Path]:
    from .apps.explain.job import explain_images

    written = explain_images(args.model, args.images, args.out, contrast=args.contrast,
                             target_layer=args.target_layer, method=args.method, columns=args.columns,
                             checkpoint=args.checkpoint)
    for path in written:
        print(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"train-backbone": cmd_train_backbone, "fit": cmd_fit, "evaluate": cmd_evaluate, "run": cmd_run,
               "cifar10c": cmd_cifar10c, "imagenetc": cmd_imagenetc, "active": cmd_active,
               "explain": cmd_explain, "ood": cmd_ood}[args.command]
    try:
        command(args)
    except IntrospectionError as err:  # says what to do: show it without a traceback
        raise SystemExit(f"timm-introspect {args.command}: error: {err}") from err
    return 0


if __name__ == "__main__":
    sys.exit(main())
