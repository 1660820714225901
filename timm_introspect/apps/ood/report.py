"""Tables, claim checks, JSON and plots of an OOD benchmark result (:func:`~.benchmark.ood_benchmark`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...data.outputs import save_figure
from ...errors import InvalidArgumentError
from .metrics import roc_curve

__all__ = ["claims", "ood_plots", "ood_table", "write_results"]

_CONVENTIONS = {"id": "ID positive (the paper, Chen et al. 2020, ODIN)", "ood": "OOD positive (pytorch-ood, OpenOOD)"}


def _rows(result: dict, condition: str) -> list[tuple[str, dict[str, dict]]]:
    """``[(detector label, {set: entry})]`` in the benchmark's detector order."""
    sets = result["conditions"][condition]["sets"]
    labels = [f"{d['name']} ({d['on']})" for d in result["detectors"]]
    return [(label, {s: sets[s][label] for s in sets}) for label in labels]


def _mean(per_set: dict[str, dict], positive: str, key: str) -> float:
    return float(np.mean([e["metrics"][positive][key] for e in per_set.values()]))


def ood_table(result: dict, positive: str = "id") -> str:
    """Markdown: per condition, every detector's FPR at 95 % TPR and AUROC per set, and their means (in %)."""
    lines = []
    for condition, entry in result["conditions"].items():
        sets = list(entry["sets"])
        acc = entry.get("accuracy", {})
        lines += [f"**{condition}** ({_CONVENTIONS[positive]}; ID accuracy f {100 * acc.get('f', float('nan')):.1f} %, "
                  f"H {100 * acc.get('H', float('nan')):.1f} %)", "",
                  "| detector | family | mean FPR95 ↓ | mean AUROC ↑ | "
                  + " | ".join(f"{s} FPR95 / AUROC" for s in sets) + " |",
                  "| --- | --- | --- | --- | " + " | ".join("---" for _ in sets) + " |"]
        for label, per_set in _rows(result, condition):
            family = next(iter(per_set.values()))["family"]
            cells = [f"{100 * m['fpr95']:.1f} / {100 * m['auroc']:.1f}"
                     for m in (per_set[s]["metrics"][positive] for s in sets)]
            lines.append(f"| {label} | {family} | {100 * _mean(per_set, positive, 'fpr95'):.1f} | "
                         f"{100 * _mean(per_set, positive, 'auroc'):.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def full_table(result: dict, positive: str = "id") -> str:
    """Markdown, one row per condition x set x detector with all five metrics (in %)."""
    keys = ("fpr95", "detection_error", "auroc", "aupr_in", "aupr_out")
    lines = [f"{_CONVENTIONS[positive]}", "", "| condition | set | detector | " + " | ".join(keys) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for condition, entry in result["conditions"].items():
        for s, per_det in entry["sets"].items():
            for label, e in per_det.items():
                m = e["metrics"][positive]
                lines.append(f"| {condition} | {s} | {label} | " + " | ".join(f"{100 * m[k]:.2f}" for k in keys) + " |")
    return "\n".join(lines)


def _compare(a: float, b: float, key: str) -> int:
    """1 when ``a`` is better than ``b`` (higher AUROC, lower error rates), -1 when worse, 0 for a tie."""
    if abs(a - b) < 1e-9:
        return 0
    return 1 if (a > b) == (key == "auroc") else -1


def claims(result: dict) -> str:
    """The paper's claim (MSP and ODIN on H beat them on f; ID-positive FPR95, detection error, AUROC per set)
    and the issue's (best introspective detector vs best classic one, mean AUROC), as measured."""
    conds = result["conditions"]
    out = []
    keys = ("fpr95", "detection_error", "auroc")
    # (label, condition for f, condition for H)
    settings = [("vanilla", "vanilla", "vanilla"), ("under attack on f (the paper's setting; H sees f's adversarial "
                                                    "images)", "attack-f", "attack-f"),
                ("each under a white-box attack (f: attack-f, H: adaptive attack-H)", "attack-f", "attack-H")]
    for text, cf, ch in settings:
        if cf not in conds or ch not in conds:
            continue
        wins = ties = total = 0
        for method in ("MSP", "ODIN"):
            for s in conds[cf]["sets"]:
                f_e, h_e = conds[cf]["sets"][s].get(f"{method} (f)"), conds[ch]["sets"][s].get(f"{method} (H)")
                if f_e is None or h_e is None:
                    continue
                for k in keys:
                    total += 1
                    c = _compare(h_e["metrics"]["id"][k], f_e["metrics"]["id"][k], k)
                    wins, ties = wins + (c > 0), ties + (c == 0)
        if total:
            out.append(f"- MSP and ODIN on H better than on f, {text}: {wins} of {total} metrics, {ties} tied "
                       "(FPR95, detection error, AUROC per set, ID positive; paper: 15 of 24 vanilla, all under "
                       "attack).")
    for text, cf, ch in settings[:1] + settings[2:]:
        if cf not in conds or ch not in conds:
            continue

        def best(condition: str, family: str) -> tuple[str, float]:
            rows = [(label, _mean(per_set, "ood", "auroc")) for label, per_set in _rows(result, condition)
                    if next(iter(per_set.values()))["family"] == family]
            return max(rows, key=lambda r: r[1]) if rows else ("none", float("nan"))

        (cl, ca), (il, ia) = best(cf, "classic"), best(ch, "introspective")
        verdict = {1: "beats", 0: "ties with", -1: "does not beat"}[_compare(ia, ca, "auroc")]
        out.append(f"- Best introspective detector {text}: {il} at {100 * ia:.1f} mean AUROC {verdict} the best "
                   f"classic one, {cl} at {100 * ca:.1f}.")
    return "\n".join(out)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "set"


def write_results(result: dict, out: str | Path, header: str = "") -> dict[str, str]:
    """``table.md`` (both conventions and the claims), ``full_table.md``, ``results.json`` and
    ``sets/<set>.json`` in ``out``; returns the file names by kind."""
    from ...data.outputs import write_json, write_text  # never through a link planted in out

    out = Path(out)
    if (out / "sets").is_symlink():
        raise InvalidArgumentError(f"{out / 'sets'} is a symbolic link: refusing to write through it; remove it")
    (out / "sets").mkdir(parents=True, exist_ok=True)
    table = "\n".join([header, "", claims(result), "", ood_table(result, "id"), ood_table(result, "ood")])
    write_text(out / "table.md", table)
    write_text(out / "full_table.md", full_table(result, "id") + "\n\n" + full_table(result, "ood") + "\n")
    plain = {k: v for k, v in result.items() if k != "scores"}
    write_json(out / "results.json", plain)
    sets = sorted({s for c in result["conditions"].values() for s in c["sets"]})
    for s in sets:
        per_set = {"set": s, "images": result["images"].get(s), "id_images": result["images"]["id"],
                   "conditions": {c: e["sets"][s] for c, e in result["conditions"].items() if s in e["sets"]}}
        write_json(out / "sets" / f"{_slug(s)}.json", per_set)
    return {"table": "table.md", "full_table": "full_table.md", "json": "results.json", "sets": "sets/"}


def ood_plots(result: dict, out: str | Path) -> list[str]:
    """Per condition and OOD set: score histograms of every detector (ID vs OOD) and ROC curves (OOD
    positive), f's detectors and H's side by side. PNGs in ``out/plots``; returns their paths relative to ``out``."""
    from ...jobs.plots import pyplot

    plt = pyplot()
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    names = []
    for condition, per_set in result["scores"].items():
        id_scores = per_set["id"]
        labels = list(id_scores)
        for s, scores in per_set.items():
            if s == "id":
                continue
            cols = 5
            rows = int(np.ceil(len(labels) / cols))
            fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
            for ax, label in zip(axes.flat, labels, strict=False):
                a, b = id_scores[label], scores[label]
                bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()) + 1e-12, 41)
                for values, name, color in ((a, "ID", "tab:blue"), (b, s, "tab:red")):  # one artist per histogram
                    ax.stairs(np.histogram(values, bins, density=True)[0], bins, fill=True, alpha=0.5, label=name,
                              color=color)
                ax.set_title(label, fontsize=8)
                ax.tick_params(labelsize=6)
                ax.locator_params(nbins=4)
            for ax in list(axes.flat)[len(labels):]:
                ax.axis("off")
            axes.flat[0].legend(fontsize=6)
            fig.suptitle(f"outlier scores, {condition}: ID vs {s}", fontsize=9)
            fig.subplots_adjust(left=0.04, right=0.99, bottom=0.05, top=0.92, wspace=0.25, hspace=0.45)
            name = f"plots/hist_{_slug(condition)}_{_slug(s)}.png"
            save_figure(fig, out / name, dpi=80)
            plt.close(fig)
            names.append(name)

            fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
            for ax, on in zip(axes, ("f", "H"), strict=True):
                for label in labels:
                    if label.endswith(f"({on})"):
                        fpr, tpr = roc_curve(id_scores[label], scores[label], "ood")
                        ax.plot(fpr, tpr, lw=1, label=label)
                ax.plot([0, 1], [0, 1], ls=":", c="gray", lw=0.8)
                ax.set(title=f"detectors on {on}", xlabel="FPR (ID flagged)", ylabel="TPR (OOD flagged)")
                ax.legend(fontsize=6, loc="lower right")
            fig.suptitle(f"ROC, {condition}: ID vs {s} (OOD positive)", fontsize=9)
            fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.86, wspace=0.08)
            name = f"plots/roc_{_slug(condition)}_{_slug(s)}.png"
            save_figure(fig, out / name, dpi=80)
            plt.close(fig)
            names.append(name)
    return names
