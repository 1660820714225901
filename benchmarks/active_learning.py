"""Active learning through f and through H: the paper's Table 1 (Section 6, Appendix C.8) with this package's code.

For every seed and query strategy (random, entropy, least confidence, margin, BALD, BADGE), one run queries
through f and one through H (random reads neither: one run serves both rows). Each run is
``timm_introspect.apps.active.run_active_learning``: every round trains f, fits H on the labeled set, scores f and H
on the clean test images and on CIFAR-10-C Gaussian noise, and queries. Table 1's "Feed-Forward" row is f's
accuracy when querying through f, "Introspective" is H's accuracy when querying through H; the mean over rounds
is averaged over seeds (± the sample standard deviation over seeds, ddof=1).

    # the CPU protocol (resnet10s_cifar, 100 + 400 x 5 rounds; about 17 min a seed with --jobs 2 on 2 cores)
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/active_learning.py --data ../shared/data/cifar10 \\
        --preset cpu --seeds 0 1 2 --jobs 2 --out runs/active-cpu
    # the CPU protocol trained as the BADGE code: f and H each round until 99 % accuracy on the labeled set
    # (capped), dropout only for BALD; results in active_learning_cpu_badge.md
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/active_learning.py --data ../shared/data/cifar10 \\
        --preset cpu-badge --seeds 0 1 2 --strategies random entropy margin badge --jobs 2 --out runs/active-badge
    # the paper's protocol (CIFAR-stem ResNet-18, 100 + 1000 x 20 rounds), for a GPU
    python benchmarks/active_learning.py --data uoft-cs/cifar10 --preset paper --seeds 0 1 2 --out runs/active-paper

Runs go to ``<out>/<strategy>-<via>-seed<k>/`` (every round checkpointed: a killed benchmark started again resumes
each run where it stopped); the table, the curves and the numbers to ``--results`` (default: ``--out``; name
benchmarks/results to update the committed ones):
``active_learning_<preset>.md``, ``.png`` and ``.json`` (``-`` in the preset's name becomes ``_``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from timm_introspect.apps.active import STRATEGIES, ActiveData, list_strategies, load_active_data, protocol_config
from timm_introspect.apps.active.config import DROPOUT_MODES
from timm_introspect.data.outputs import prepare_output, save_figure, write_json, write_text
from timm_introspect.errors import InvalidArgumentError
from timm_introspect.jobs.args import (
    MIXED_PRECISION,
    OneLineParser,
    data_source,
    deprecated,
    non_negative,
    positive,
    run_script,
    scale_choices,
)
from timm_introspect.jobs.plots import pyplot
from timm_introspect.training.recipes import ACTIVE_ALIASES, ACTIVE_PRESETS

LABELS = {"random": "Random", "entropy": "Entropy", "least_confidence": "Least confidence", "margin": "Margin",
          "bald": "BALD", "badge": "BADGE"}
SETS = {"clean": "Original test set", "gaussian_noise": "Gaussian noise"}


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=data_source, default="uoft-cs/cifar10")
    p.add_argument("--preset", choices=list(ACTIVE_PRESETS), default="cpu")
    deprecated(p, "--protocol", "--preset", choices=[*ACTIVE_PRESETS, *ACTIVE_ALIASES], values=ACTIVE_ALIASES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--strategies", nargs="+", choices=list_strategies(), default=list_strategies())
    p.add_argument("--jobs", type=positive, default=1, help="runs in parallel (processes)")
    p.add_argument("--threads", type=positive, default=None, help="torch threads per run (default: 1 with --jobs > 1)")
    p.add_argument("--data-seed", type=int, default=0, help="the pool and test subsets and the Gaussian noise")
    p.add_argument("--rounds", type=non_negative, default=None)
    p.add_argument("--query-size", type=positive, default=None)
    p.add_argument("--epochs", type=positive, default=None)
    p.add_argument("--until-train-accuracy", type=float, default=None,
                   help="train f and H each round until this accuracy on the labeled set (the cpu-badge preset: 0.99)")
    p.add_argument("--max-epochs", type=positive, default=None, help="f's most epochs a round with the above")
    p.add_argument("--head-max-epochs", type=positive, default=None, help="H's, likewise")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="f trains on cropped and flipped images, or on the images as they are (cpu-badge)")
    p.add_argument("--dropout", choices=DROPOUT_MODES, default=None,
                   help="always: dropout for every strategy; bald: only where BALD samples it (cpu-badge)")
    p.add_argument("--reset", action=argparse.BooleanOptionalAction, default=None,
                   help="re-initialize f every round (the protocols' default, as the BADGE code) or continue")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=None, help="training on a GPU")
    p.add_argument("--scale", choices=scale_choices(), default=None,
                   help="r_x scaling before H (default: the paper's maxabs)")
    p.add_argument("--compare", default=None,
                   help="the .json of another preset's results (e.g. benchmarks/results/active_learning_cpu.json): "
                        "adds the H-vs-f gaps of both, strategy by strategy")
    p.add_argument("--out", required=True)
    p.add_argument("--results", default=None,
                   help="folder for the table, curves and numbers (default: --out; the committed benchmarks/results "
                        "only when named)")
    return p.parse_args(argv)


def overrides(args) -> dict:
    return {k: v for k, v in dict(rounds=args.rounds, query_size=args.query_size, epochs=args.epochs,
                                  reset=args.reset, mixed_precision=args.mixed_precision, scale=args.scale,
                                  until_train_accuracy=args.until_train_accuracy, max_epochs=args.max_epochs,
                                  head_max_epochs=args.head_max_epochs, dropout=args.dropout,
                                  augment=args.augment).items()
            if v is not None}


def prepare_data(args) -> Path:
    """The pool and test sets, decoded and corrupted once, in ``<out>/data.safetensors`` (the runs read it)."""
    out = Path(args.out)
    spec = {"data": args.data, "data_seed": args.data_seed, **ACTIVE_PRESETS[args.preset]["data"]}
    path, spec_path = out / "data.safetensors", out / "data.json"
    if path.is_file() and spec_path.is_file():
        if json.loads(spec_path.read_text()) != spec:
            raise InvalidArgumentError(f"{path} holds other data ({spec_path.read_text()}): use another --out")
        return path
    out.mkdir(parents=True, exist_ok=True)
    data = load_active_data(args.data, spec["pool"], spec["test"], spec["noise"], args.data_seed)
    data.save(path)
    write_json(spec_path, spec, indent=None)
    return path


def run_one(data_path: str, config: dict, out_dir: str, threads: int | None) -> dict:
    """One run in a worker process; its progress bars go to ``<run>/log.txt``."""
    import torch

    from timm_introspect.apps.active import ActiveConfig, run_active_learning

    if threads:
        torch.set_num_threads(threads)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(Path(out_dir) / "log.txt", "a") as log:
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            result = run_active_learning(ActiveData.load(data_path), ActiveConfig(**config), out_dir)
        finally:
            sys.stdout, sys.stderr = stdout, stderr
    seconds = sum(sum(r["seconds"].values()) for r in result["history"])
    return {"config": config, "out": out_dir, "history": result["history"], "wall_s": time.perf_counter() - t0,
            "run_s": seconds}


def accuracies(run: dict, model: str, part: str) -> list[float]:
    return [r["metrics"][part][model]["accuracy"] for r in run["history"]]


def aggregate(runs: list[dict]) -> dict:
    """``{strategy: {via: {model: {set: {"per_seed": [...], "mean", "std", "curve_mean", "curve_std", "sizes"}}}}}``."""
    table: dict = {}
    for run in runs:
        cfg = run["config"]
        vias = ("f", "H") if cfg["strategy"] == "random" else (cfg["via"],)  # random's one run serves both
        for via in vias:
            for model in ("f", "H"):
                for part in run["history"][0]["metrics"]:
                    cell = table.setdefault(cfg["strategy"], {}).setdefault(via, {}).setdefault(model, {}).setdefault(
                        part, {"per_seed": {}, "curves": {}})
                    curve = accuracies(run, model, part)
                    cell["per_seed"][cfg["seed"]] = float(np.mean(curve))
                    cell["curves"][cfg["seed"]] = curve
                    cell["sizes"] = [r["labeled_images"] for r in run["history"]]
    for via_map in table.values():
        for model_map in via_map.values():
            for part_map in model_map.values():
                for cell in part_map.values():
                    values = list(cell["per_seed"].values())
                    curves = np.array(list(cell["curves"].values()))
                    ddof = 1 if len(values) > 1 else 0  # the sample standard deviation (0 for one seed)
                    cell.update(mean=float(np.mean(values)), std=float(np.std(values, ddof=ddof)), seeds=len(values),
                                curve_mean=curves.mean(0).tolist(), curve_std=curves.std(0, ddof=ddof).tolist())
    return table


def fmt(cell: dict) -> str:
    """``mean ± sd`` over seeds; one seed has no spread to show."""
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}" if cell.get("seeds", 2) > 1 else f"{cell['mean']:.3f}"


def table1(agg: dict) -> str:
    """The paper's Table 1: f's accuracy querying through f vs H's accuracy querying through H."""
    parts = [p for p in SETS if any(p in agg[s]["f"]["f"] for s in agg)]
    lines = ["| Method | Architecture | " + " | ".join(SETS[p] for p in parts) + " |",
             "| --- | --- | " + " | ".join("---" for _ in parts) + " |"]
    for s in (s for s in STRATEGIES if s in agg):
        for via, name in (("f", "Feed-Forward"), ("H", "Introspective")):
            if via in agg[s]:
                lines.append(f"| {LABELS[s]} | {name} | " + " | ".join(fmt(agg[s][via][via][p]) for p in parts) + " |")
    return "\n".join(lines)


def full_table(agg: dict) -> str:
    """Every combination: queried through f or H, accuracy of f or H."""
    parts = [p for p in SETS if any(p in agg[s]["f"]["f"] for s in agg)]
    lines = ["| strategy | queried via | accuracy of | " + " | ".join(SETS[p] for p in parts) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in parts) + " |"]
    for s in (s for s in STRATEGIES if s in agg):
        for via in agg[s]:
            for model in ("f", "H"):
                cells = " | ".join(fmt(agg[s][via][model][p]) for p in parts)
                lines.append(f"| {LABELS[s]} | {via} | {model} | {cells} |")
    return "\n".join(lines)


def verdicts(agg: dict) -> list[str]:
    """The issue's questions, answered from the numbers: H vs f per strategy, and best vs best."""
    lines = []
    both = [s for s in STRATEGIES if s in agg and {"f", "H"} <= set(agg[s])]
    for s in both:
        diffs = {}
        for p in ("clean", "gaussian_noise"):
            if p in agg[s]["f"]["f"]:
                f_seeds, h_seeds = agg[s]["f"]["f"][p]["per_seed"], agg[s]["H"]["H"][p]["per_seed"]
                per_seed = [h_seeds[k] - f_seeds[k] for k in f_seeds if k in h_seeds]
                wins = sum(d > 0 for d in per_seed)
                diffs[p] = f"{100 * np.mean(per_seed):+.2f} points (H better in {wins} of {len(per_seed)} seeds)"
        lines.append(f"- {LABELS[s]}: H - f = " + "; ".join(f"{SETS[p].lower()} {d}" for p, d in diffs.items()))
    for p in ("clean", "gaussian_noise"):
        f_best = max(both, key=lambda s: agg[s]["f"]["f"][p]["mean"], default=None)
        h_best = max(both, key=lambda s: agg[s]["H"]["H"][p]["mean"], default=None)
        if f_best and p in agg[f_best]["f"]["f"]:
            lines.append(f"- best on {SETS[p].lower()}: through f {LABELS[f_best]} {fmt(agg[f_best]['f']['f'][p])}, "
                         f"through H {LABELS[h_best]} {fmt(agg[h_best]['H']['H'][p])}")
    return lines


def training_table(runs: list[dict]) -> str:
    """Per round (labeled set size): epochs f and H trained until the threshold (mean, range) and how many runs'
    rounds reached it, over every run (``until_train_accuracy`` runs only)."""
    lines = ["| round | labeled | f epochs: mean (min-max) | f reached | f train accuracy (min) | H epochs: mean "
             "(min-max) | H reached | H train accuracy (min) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, record in enumerate(runs[0]["history"]):
        cells = []
        for model in ("f", "H"):
            stats = [r["history"][k]["training"][model] for r in runs if len(r["history"]) > k]
            epochs = [t["epochs"] for t in stats]
            cells += [f"{np.mean(epochs):.1f} ({min(epochs)}-{max(epochs)})",
                      f"{sum(t['reached'] for t in stats)}/{len(stats)}",
                      f"{min(t['train_accuracy'] for t in stats):.3f}"]
        lines.append(f"| {k} | {record['labeled_images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paired(a: dict, b: dict) -> str:
    """``mean ± sd`` in points of ``a[seed] - b[seed]`` over the seeds both have (sd with ddof=1)."""
    d = [100 * (a[k] - b[k]) for k in a if k in b]
    return ("n/a" if not d else f"{np.mean(d):+.1f} ± {np.std(d, ddof=1):.1f}" if len(d) > 1 else f"{d[0]:+.1f}")


def _mean_sd(per_seed: dict) -> str:
    """``mean ± sd`` of per-seed accuracies (sd with ddof=1, whatever the results file recorded)."""
    v = list(per_seed.values())
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def _per_seed(cell: dict) -> dict:
    return {int(k): v for k, v in cell["per_seed"].items()}  # (JSON makes the seeds strings)


def compare_section(agg: dict, name: str, other: dict, other_name: str) -> list[str]:
    """Markdown: for every strategy both results hold, f (queried via f), H (queried via H), Table 1's gap
    H - f (paired by seed) and H - f within the runs that query via f (the same labeled sets: the gap of the models
    alone), in points, mean ± sample sd over seeds; then that within-run gap round by round for random."""
    lines = []
    for part in (p for p in SETS if all(p in agg[s]["f"]["f"] for s in agg)):
        lines += [f"### {SETS[part]}", "", "| strategy | protocol | seeds | f (query f) | H (query H) | H - f, Table 1 "
                  "(points) | H - f, same labeled sets (points) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for s in (s for s in STRATEGIES if s in agg and s in other):
            for label, table in ((other_name, other), (name, agg)):
                if "H" not in table[s] or part not in table[s]["f"]["f"]:
                    continue
                ff, hh, hf = (_per_seed(table[s][v][m][part]) for v, m in (("f", "f"), ("H", "H"), ("f", "H")))
                lines.append(f"| {LABELS[s]} | {label} | {len(ff)} | {_mean_sd(ff)} | {_mean_sd(hh)} | "
                             f"{_paired(hh, ff)} | {_paired(hf, ff)} |")
        lines.append("")
    if "random" in agg and "random" in other:
        lines += ["### Random: H - f round by round (original test set, points, mean ± sample sd over seeds)", ""]
        for label, table in ((other_name, other), (name, agg)):
            sizes = table["random"]["f"]["f"]["clean"]["sizes"]
            lines += ["| protocol \\ labeled | " + " | ".join(str(n) for n in sizes) + " |",
                      "| --- | " + " | ".join("---" for _ in sizes) + " |"]
            f_curves = table["random"]["f"]["f"]["clean"]["curves"]
            h_curves = table["random"]["f"]["H"]["clean"]["curves"]
            d = 100 * (np.array([h_curves[k] for k in f_curves]) - np.array([f_curves[k] for k in f_curves]))
            sd = d.std(0, ddof=1) if len(d) > 1 else np.zeros(d.shape[1])
            cells = [f"{m:+.1f} ± {e:.1f}" if len(d) > 1 else f"{m:+.1f}" for m, e in zip(d.mean(0), sd, strict=True)]
            lines += [f"| {label} | " + " | ".join(cells) + " |", ""]
    return lines


def plot(agg: dict, path: Path) -> None:
    plt = pyplot()
    strategies = [s for s in STRATEGIES if s in agg]
    parts = [p for p in SETS if p in agg[strategies[0]]["f"]["f"]]
    fig, axes = plt.subplots(len(parts), len(strategies), figsize=(3.2 * len(strategies), 2.8 * len(parts)),
                             squeeze=False, sharey="row")
    styles = {("f", "f"): ("tab:red", "-", "f (query f)"), ("H", "H"): ("tab:blue", "-", "H (query H)"),
              ("H", "f"): ("tab:red", ":", "f (query H)")}
    for j, s in enumerate(strategies):
        for i, p in enumerate(parts):
            ax = axes[i][j]
            for (via, model), (color, line, label) in styles.items():
                if via in agg[s] and (s != "random" or via == model):
                    cell = agg[s][via][model][p]
                    mean, std = np.array(cell["curve_mean"]), np.array(cell["curve_std"])
                    ax.plot(cell["sizes"], mean, line, color=color, marker="o", ms=3, label=label)
                    ax.fill_between(cell["sizes"], mean - std, mean + std, color=color, alpha=0.15)
            ax.set(title=f"{LABELS[s]}: {SETS[p].lower()}", xlabel="labeled images", ylabel="accuracy")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)  # a strategy that has all three lines (random has two)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out = prepare_output(args.out, "benchmark")  # both places checked before any work
    args.results = prepare_output(args.results or args.out, "benchmark")
    pyplot()  # matplotlib is there before any work starts
    if args.jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    threads = args.threads or (1 if args.jobs > 1 else None)
    t0 = time.perf_counter()
    data_path = prepare_data(args)
    prep_s = time.perf_counter() - t0
    configs = []
    for seed in args.seeds:
        for s in args.strategies:
            for via in ("f",) if s == "random" else ("f", "H"):
                cfg = protocol_config(args.preset, strategy=s, via=via, seed=seed, **overrides(args))
                configs.append(cfg.to_dict())
    out = Path(args.out)
    runs = []
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, str(data_path), c, str(out / f"{c['strategy']}-{c['via']}-seed{c['seed']}"),
                               threads): c for c in configs}
        for future in as_completed(futures):
            run = future.result()
            runs.append(run)
            c = run["config"]
            accs = {f"{p} {m}": np.mean(accuracies(run, m, p)) for p in run["history"][0]["metrics"] for m in "fH"}
            print(f"[{len(runs)}/{len(configs)}] {c['strategy']} via {c['via']} seed {c['seed']}: mean accuracy "
                  + ", ".join(f"{k} {v:.3f}" for k, v in accs.items()) + f" ({run['wall_s']:.0f} s)", flush=True)
    total_s = time.perf_counter() - t0
    agg = aggregate(runs)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    name = f"active_learning_{args.preset.replace('-', '_')}"
    plot(agg, results / f"{name}.png")
    # every field, those to_dict leaves out at their defaults too
    config = dict(dataclasses.asdict(protocol_config(args.preset, strategy="entropy", **overrides(args))))
    config["hidden"] = list(config["hidden"])
    spec = ACTIVE_PRESETS[args.preset]["data"]
    until = config["until_train_accuracy"]
    if until is None:
        f_training = (f"schedule {config['schedule']}, at least {config['min_steps']} steps, batch "
                      f"{config['batch_size']}")
        h_training = f"schedule {config['head_schedule']}, at least {config['head_min_steps']} steps"
    else:
        f_training = (f"until {until:.0%} accuracy on the labeled set (eval pass after each epoch), at most "
                      f"{config['max_epochs']} epochs, SGD at a constant lr {config['schedule']['lr']} after a "
                      f"one-epoch warm-up (momentum {config['schedule']['momentum']}, Nesterov "
                      f"{config['schedule']['nesterov']}, weight decay {config['schedule']['weight_decay']}), batch "
                      f"{config['batch_size']}")
        h_training = (f"until {until:.0%} accuracy on the labeled set's r_x, at most {config['head_max_epochs']} "
                      f"epochs, SGD at a constant lr {config['head_schedule']['lr']} after a one-epoch warm-up, "
                      f"batch {config['head_batch_size']}")
    augment = "random crops and flips" if config["augment"] else "the images as they are (no augmentation)"
    dropout = ("for every strategy" if config["dropout"] == "always" else
               "only where BALD samples it (f's for BALD via f, H's for BALD via H; 0 otherwise)")
    command = "python benchmarks/active_learning.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = [
        f"# Active learning through f and through H (the {args.preset} preset)", "",
        f"Command: `{command}`", "",
        f"- {len(runs)} runs ({len(args.seeds)} seeds: {args.seeds}), {args.jobs} in parallel; total "
        f"{total_s / 60:.1f} min (data {prep_s:.0f} s); run times {min(r['wall_s'] for r in runs):.0f}-"
        f"{max(r['wall_s'] for r in runs):.0f} s in this call; the rounds' recorded times (a resumed run's too) "
        f"{min(r['run_s'] for r in runs):.0f}-{max(r['run_s'] for r in runs):.0f} s a run, "
        f"{sum(r['run_s'] for r in runs) / 60:.0f} min in all.",
        f"- f: `{config['model']}`, dropout {config['drop_rate']} before the classifier {dropout}, "
        f"{'re-initialized' if config['reset'] else 'continued'} every round; {config['initial']} random labels + "
        f"{config['query_size']} x {config['rounds']} rounds; {f_training}; trained on {augment}.",
        f"- H: the paper's MLP {config['hidden']} with dropout {config['head_drop_rate']} {dropout}, loss "
        f"{config['loss']}, scaling {config['scale']}, fitted on the labeled set every round; {h_training}. BALD: "
        f"{config['mc_passes']} Monte Carlo dropout passes.",
        f"- Data: {args.data}; pool {spec['pool'] or 'all'} training images, {spec['test'] or 'all'} test images, "
        f"Gaussian noise {spec['noise']} (data seed {args.data_seed}).", "",
        f"## Table 1: mean accuracy over rounds (mean ± sample std over {len(args.seeds)} seeds, ddof=1)", "",
        "Feed-Forward: f's accuracy, querying through f. Introspective: H's accuracy, querying through H.", "",
        table1(agg), "", *verdicts(agg), "",
        "## Every combination (queried via x accuracy of)", "", full_table(agg), "",
        f"![per-round accuracy]({name}.png)", "",
    ]
    if until is not None:
        report += ["## Training per round (every run)", "", training_table(runs), ""]
    if args.compare:
        other = json.loads(Path(args.compare).read_text())
        other_name = other["args"].get("preset") or other["args"].get("protocol") or Path(args.compare).stem
        report += [f"## H against f: {args.preset} and {other_name} ({args.compare})", "",
                   *compare_section(agg, args.preset, other["aggregate"], other_name)]
    write_text(results / f"{name}.md", "\n".join(report))
    write_text(results / f"{name}.json", json.dumps(
        {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "total_s": total_s,
         "aggregate": agg,
         "runs": [{"config": r["config"], "wall_s": r["wall_s"],  # the queried indices stay in the run folders
                   "history": [{k: v for k, v in h.items() if k != "queried"} for h in r["history"]]} for r in runs]},
        indent=1))
    print("\n".join(report))
    return agg


if __name__ == "__main__":
    sys.exit(run_script(main))
