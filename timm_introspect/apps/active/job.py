"""``timm-introspect active``: one active-learning run of a named preset (protocol), from a ``datasets`` source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import DataError, InvalidArgumentError
from .config import PROTOCOLS, ActiveConfig, preset_name, protocol_config
from .data import ActiveData, load_active_data
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
    from ...data.outputs import prepare_output

    out_dir = prepare_output(out_dir, "active")  # before any work: a wrong place fails at once
    protocol = preset_name(protocol)  # (an old name: once, with its deprecation warning)
    config = protocol_config(protocol, strategy=strategy, via=via, seed=seed, **overrides)
    check_config(config)
    spec = PROTOCOLS[protocol]["data"]
    active_data = load_active_data(data, pool or spec["pool"], test or spec["test"], noise or spec["noise"], data_seed,
                                   image_column, label_column)
    check_images(config, active_data)
    return run_active_learning(active_data, config, out_dir, progress=progress)


def check_config(config: ActiveConfig) -> None:
    """What round 0 would find out only after training f: the architecture exists, and BALD has at least two
    Monte Carlo passes."""
    import timm

    from ... import nets  # noqa: F401  (registers the CIFAR-stem architectures)

    if not timm.is_model(config.model):
        close = [m for m in timm.list_models(f"*{config.model.split('.')[0][:6]}*")][:5]
        raise InvalidArgumentError(f"unknown architecture {config.model!r}: name a timm model for 32 px input such "
                                   f"as resnet18_cifar or resnet10s_cifar{f' (close: {close})' if close else ''}")
    if config.strategy == "bald" and config.mc_passes < 2:
        raise InvalidArgumentError(f"BALD needs at least 2 Monte Carlo dropout passes: mc_passes={config.mc_passes}; "
                                   "pass 2 or more (the paper's: 10)")


def check_images(config: ActiveConfig, data: ActiveData) -> None:
    """The pool's images are the size f's architecture takes (they are used as they are, not resized)."""
    import timm

    size = timm.get_pretrained_cfg_value(config.model, "input_size") if hasattr(
        timm, "get_pretrained_cfg_value") else None
    if size is None:
        size = timm.create_model(config.model, num_classes=data.num_classes).pretrained_cfg.get("input_size")
    found = tuple(data.pool_images.shape[1:3])
    if size is not None and tuple(size[-2:]) != found:
        raise DataError(f"the images are {found[1]}x{found[0]} px, {config.model} takes {size[-1]}x{size[-2]}: "
                        "pass a dataset of images of that size, or an architecture for them with --arch")


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
