"""The main job: train f with a held-out split, fit H, and compare f, its post-hoc calibrations (TS, ETS, DAC)
and H on clean and corrupted images.

``timm-introspect run`` calls :func:`run`; the pieces are the jobs of :mod:`timm_introspect.training.pipeline` and
the comparison of :mod:`timm_introspect.jobs.robustness`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import PartialState

from ..data.images import LabeledImages
from ..data.outputs import write_json, write_text
from ..errors import InvalidArgumentError
from ..training.loop import Schedule
from ..training.pipeline import evaluate, fit_head, holdout_record, train_backbone

__all__ = ["run"]


def run(
    train: LabeledImages,
    test: LabeledImages,
    out_dir: str | Path,
    model_name: str,
    cifar_stem: bool,
    backbone_schedule: Schedule,
    head_schedule: Schedule,
    batch_size: int = 128,
    seed: int = 0,
    loss: str = "mse-M",
    net: str = "mlp",
    workers: int = 0,
    limit: int | None = None,
    holdout: float = 0.0,
    corruptions: Sequence[str] = (),
    corruption_images: int = 1000,
    frost_dir: str | None = None,
    channels_last: bool = False,
    scale: bool | str = True,
    augmix: int = 0,
) -> dict[str, Any]:
    """The main job: train f (without a held-out split), fit H on f's training images, evaluate f, f with
    temperature scaling (T fitted on the held-out images) and H on ``test`` and on CIFAR-10-C.

    CIFAR-10-C is generated on the fly from a seeded subset of ``corruption_images`` test images, for
    ``corruptions`` x 5 severities (none: clean images only; temperature scaling needs ``holdout`` > 0).
    Writes ``<out>/backbone/``, ``<out>/introspective/`` (the results in its model card),
    ``<out>/metrics.json``, ``<out>/results.md`` and the plots; returns what ``metrics.json`` holds.
    ``augmix``: H also trains on that many AugMix copies of each of f's training images (``fit_head``).
    """
    from .robustness import calibration_images, corruption_benchmark, summary_table

    out = Path(out_dir)
    if corruptions:
        from ..data.cifar10c import CORRUPTIONS  # noqa: F401  (fail now, not after training, without the extra)
        from .plots import pyplot

        pyplot()
        if not holdout:
            raise InvalidArgumentError("the corruption benchmark compares with temperature-scaled f, which needs "
                                       "held-out images: pass holdout > 0 (e.g. 0.1)")
    times = {}
    t0 = time.perf_counter()
    backbone = train_backbone(train, out / "backbone", model_name, cifar_stem, backbone_schedule, batch_size, seed,
                              workers=workers, limit=limit, holdout=holdout, channels_last=channels_last)
    times["train_backbone_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    f_train = train.split_holdout(holdout, seed)[0] if holdout else train
    head = fit_head(backbone, f_train, out / "introspective", loss=loss, schedule=head_schedule, batch_size=batch_size,
                    seed=seed, workers=workers, net=net, calibration=holdout_record(out / "backbone"), scale=scale,
                    save=False, augmix=augmix)  # saved once, below, with the results in its model card
    times["fit_head_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result: dict[str, Any] = {"data": train.source, "train_images": len(f_train), "test_images": len(test),
                              "h_training": head.h_training}  # H's rows and AugMix copies, as its model records them
    if not holdout:  # f and H only (every process takes part)
        result["metrics"] = evaluate(head, test, batch_size=256, workers=workers)
        head.metrics = {test.split: result["metrics"]}
    elif PartialState().is_main_process:  # f, f+TS and H, the clean test set scored once, with the corrupted sets
        clean, labels = test.arrays()
        subset = np.sort(np.random.default_rng(seed).permutation(len(labels))[:corruption_images])
        bench = corruption_benchmark(head, clean[subset], labels[subset], calibration_images(head).arrays(),
                                     corruptions, seed=seed, frost_dir=frost_dir, clean_eval=(clean, labels),
                                     training=f_train.arrays()[0])  # DAC's densities: f's training images
        result["robustness"] = bench
        result["metrics"] = bench["clean"]
        result["table"] = summary_table(bench)
        head.metrics = {"clean": bench["clean"]}
        head.reliability = {"clean": bench["clean_reliability"]}  # the card's reliability diagrams
        head.fitted_calibration = bench["fitted_calibration"]  # T and the OOD threshold: predict works offline
        if corruptions:
            head.metrics["CIFAR-10-C (mean)"] = bench["mean_corrupted"]
            from .plots import corruption_plots

            result["plots"] = corruption_plots(bench, out)
        write_text(out / "results.md", result["table"] + "\n")
    times["evaluate_s"] = time.perf_counter() - t0
    result["times"] = times
    if PartialState().is_main_process:  # under accelerate launch: one process writes
        head.save_pretrained(out / "introspective")  # the one save: the model card shows the results
        write_json(out / "metrics.json", result)
    return result
