"""``timm-introspect active``: one active-learning run of a named preset (protocol), from a ``datasets`` source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import PROTOCOLS, preset_name, protocol_config
from .data import load_active_data
from .loop import run_active_learning

__all__ = ["history_table", "run_active"]


def run_active(
    data: str,
    out_dir: str | Path,
    strategy: str,
    via: str = "f",
    protocol: str = "cpu",
    seed: int = 0,
    pool: int | None = None,
    test: int | None = None,
    noise: str | None = None,
    data_seed: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Load the pool and test sets of ``protocol`` (sizes overridable) and run the loop into ``out_dir``.

    ``overrides``: :class:`~timm_introspect.apps.active.ActiveConfig` fields (``rounds``, ``query_size``,
    ``reset``, ...;
    ``None`` keeps the protocol's; ``epochs`` for f's schedule). Resumes when ``out_dir`` holds rounds of the same run.
    """
    protocol = preset_name(protocol)  # (an old name: once, with its deprecation warning)
    config = protocol_config(protocol, strategy=strategy, via=via, seed=seed, **overrides)
    spec = PROTOCOLS[protocol]["data"]
    active_data = load_active_data(data, pool or spec["pool"], test or spec["test"], noise or spec["noise"], data_seed,
                                   image_column, label_column)
    return run_active_learning(active_data, config, out_dir, progress=progress)


def history_table(result: dict[str, Any]) -> str:
    """A Markdown table: accuracy of f and H on each test set, per round, and the mean over rounds."""
    history = result["history"]
    sets = list(history[0]["metrics"]) if history else []
    cols = [f"{s} {m}" for s in sets for m in ("f", "H")]
    lines = ["| round | labeled | " + " | ".join(cols) + " |",
             "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for r in history:
        accs = [f"{r['metrics'][s][m]['accuracy']:.4f}" for s in sets for m in ("f", "H")]
        lines.append(f"| {r['round']} | {r['labeled_images']} | " + " | ".join(accs) + " |")
    if history:
        means = [sum(r["metrics"][s][m]["accuracy"] for r in history) / len(history) for s in sets for m in ("f", "H")]
        lines.append("| mean | | " + " | ".join(f"{v:.4f}" for v in means) + " |")
    return "\n".join(lines)
