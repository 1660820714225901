"""The fidelity study's table and plot: every method's mean ± std over seeds (``fidelity.py`` writes the runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from timm_introspect.data.outputs import save_figure
from timm_introspect.jobs.plots import pyplot

PARTS = ("clean", "corrupted", "severity5")
#: the columns of the table: (part, metric)
COLUMNS = (("clean", "accuracy"), ("clean", "ece"), ("clean", "nll"), ("corrupted", "accuracy"),
           ("corrupted", "ece"), ("corrupted", "nll"), ("corrupted", "brier"), ("severity5", "accuracy"),
           ("severity5", "ece"), ("severity5", "nll"))
BASELINES = ("f", "f+TS", "f+ETS", "DAC+TS", "DAC+ETS")


def method_name(method: str, variant: str) -> str:
    return method if variant == "baselines" else f"{method} [{variant}]"


def aggregate(results: list[dict]) -> dict:
    """``{method: {part: {metric: (mean, std (ddof=1), seeds)}}}`` over the runs of every seed."""
    values: dict = {}
    for r in results:
        for method, parts in r["methods"].items():
            for part in PARTS:
                for key, v in parts[part].items():
                    values.setdefault(method_name(method, r["variant"]), {}).setdefault(part, {}).setdefault(
                        key, []).append(v)
    return {m: {p: {k: (float(np.mean(x)), float(np.std(x, ddof=1)) if len(x) > 1 else 0.0, len(x))
                    for k, x in ks.items()} for p, ks in parts.items()} for m, parts in values.items()}


def _cell(stat, metric: str) -> str:
    mean, std, n = stat if len(stat) == 3 else (*stat, 1)
    if metric == "accuracy":
        return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def markdown(agg: dict, ensemble: dict | None = None) -> str:
    """One row per method (baselines first), mean ± std over seeds; the deep ensemble (one run) last."""
    head = "| method | " + " | ".join(f"{p} {'acc' if k == 'accuracy' else k.upper()}" for p, k in COLUMNS) + " |"
    lines = [head.replace("corrupted", "C").replace("severity5", "sev5"), "|" + " --- |" * (len(COLUMNS) + 1)]
    order = [m for m in BASELINES if m in agg] + [m for m in agg if m not in BASELINES]
    for m in order:
        lines.append(f"| {m} | " + " | ".join(_cell(agg[m][p][k], k) for p, k in COLUMNS) + " |")
    for m, parts in (ensemble or {}).items():
        lines.append(f"| {m} | " + " | ".join(_cell((parts[p][k], 0.0, 1), k) for p, k in COLUMNS) + " |")
    return "\n".join(lines)


def plot(agg: dict, ensemble: dict | None, out: Path) -> str:
    """Accuracy against ECE on the corrupted sets (left) and clean images (right), every method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, part in zip(axes, ("corrupted", "clean"), strict=True):
        for m, parts in agg.items():
            acc, ece = parts[part]["accuracy"], parts[part]["ece"]
            base = m in BASELINES
            ax.errorbar(100 * acc[0], ece[0], xerr=100 * acc[1], yerr=ece[1], fmt="s" if base else "o",
                        ms=6 if base else 4, capsize=2, color="tab:red" if base else None)
            ax.annotate(m, (100 * acc[0], ece[0]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        for m, parts in (ensemble or {}).items():
            ax.plot(100 * parts[part]["accuracy"], parts[part]["ece"], "*", ms=12, color="black")
            ax.annotate(m, (100 * parts[part]["accuracy"], parts[part]["ece"]), fontsize=7, xytext=(3, 2),
                        textcoords="offset points")
        ax.set(xlabel="accuracy (%)", ylabel="ECE", title=f"{part} (mean ± std over seeds; squares: baselines)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / "fidelity.png", dpi=120)
    plt.close(fig)
    return "fidelity.png"


def goal_table(results: list[dict]) -> str:
    """Issue 23's goal, per method and seed: corrupted ECE against the best post-hoc baseline's (the lowest of
    f+TS, f+ETS, DAC+TS, DAC+ETS in that seed), NLL against the best baseline NLL, accuracy against f's (corrupted
    and clean), clean ECE against f+TS's + 0.005. A method meets the goal in a seed when all five hold."""
    base = {r["seed"]: r["methods"] for r in results if r["variant"] == "baselines"}
    rows = ["| method | seed | C ECE vs best baseline | C NLL - best | C acc - f | clean acc - f "
            "| clean ECE - (f+TS + 0.005) | goal met |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        if r["variant"] == "baselines" or r["seed"] not in base:
            continue
        b = base[r["seed"]]
        best_ece = min(b[m]["corrupted"]["ece"] for m in BASELINES[1:])
        best_nll = min(b[m]["corrupted"]["nll"] for m in BASELINES[1:])
        for method, parts in r["methods"].items():
            c, clean = parts["corrupted"], parts["clean"]
            cut = 1 - c["ece"] / best_ece
            checks = (cut >= 0.2, c["nll"] < best_nll, c["accuracy"] >= b["f"]["corrupted"]["accuracy"],
                      clean["accuracy"] >= b["f"]["clean"]["accuracy"] - 0.003,
                      clean["ece"] <= b["f+TS"]["clean"]["ece"] + 0.005)
            rows.append(f"| {method_name(method, r['variant'])} | {r['seed']} | {100 * cut:+.1f} % "
                        f"({c['ece']:.4f} vs {best_ece:.4f}) | {c['nll'] - best_nll:+.4f} | "
                        f"{100 * (c['accuracy'] - b['f']['corrupted']['accuracy']):+.2f} | "
                        f"{100 * (clean['accuracy'] - b['f']['clean']['accuracy']):+.2f} | "
                        f"{clean['ece'] - b['f+TS']['clean']['ece'] - 0.005:+.4f} | "
                        f"{_verdict(checks)} |")
    return "\n".join(rows)


def floor_table(results: list[dict]) -> str:
    """Measured ECE beside its floor (the ECE a perfectly calibrated model with the same confidences measures on
    sets of this size, ``ece_floor``) and the excess above it: means over the seeds whose runs recorded the floor
    (both columns over the same seeds)."""
    values: dict = {}
    for r in results:
        for method, parts in r["methods"].items():
            if "ece_floor" not in parts["corrupted"]:
                continue
            row = values.setdefault(method_name(method, r["variant"]), [])
            row.append([parts[p][k] for p in ("corrupted", "clean") for k in ("ece", "ece_floor")])
    rows = ["| method | seeds | C ECE | C ECE floor | C excess | clean ECE | clean floor | clean excess |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    order = [m for m in BASELINES if m in values] + [m for m in values if m not in BASELINES]
    for m in order:
        c, c_floor, clean, clean_floor = np.mean(values[m], axis=0)
        rows.append(f"| {m} | {len(values[m])} | {c:.4f} | {c_floor:.4f} | {c - c_floor:.4f} | {clean:.4f} | "
                    f"{clean_floor:.4f} | {clean - clean_floor:.4f} |")
    return "\n".join(rows)


GOALS = ("ECE", "NLL", "C acc", "clean acc", "clean ECE")


def _verdict(checks: tuple[bool, ...]) -> str:
    missed = [name for name, ok in zip(GOALS, checks, strict=True) if not ok]
    return "yes" if not missed else "no (" + ", ".join(missed) + ")"
