"""The OOD job: load a saved introspective model and its data, build the OOD sets, run the benchmark, write it.

``timm-introspect ood`` and ``benchmarks/ood.py`` both call :func:`run_ood`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...data.images import load_images
from ...errors import DataError, InvalidArgumentError
from ...io.backbones import HF_HUB_PREFIX
from ...model.head import IntrospectiveHead
from ...training.recipes import OOD_PRESETS
from .benchmark import CONDITIONS, DETECTORS, ood_benchmark
from .data import BUILTIN_SETS, OODSet, corrupted_images, load_ood_images, noise_images, open_set_images, set_name
from .report import claims, ood_plots, ood_table, write_results

__all__ = ["QUICK", "run_ood"]

#: ``--preset quick``: a CPU run in a few minutes (fewer images; the attack protocol is unchanged); the recipe is
#: :data:`timm_introspect.training.recipes.OOD_PRESETS`.
QUICK = OOD_PRESETS["quick"]


def _classes(head: IntrospectiveHead, data: str, split: str) -> list[str] | None:
    """The model's class names when it was trained on a strict subset of the dataset's classes (CIFAR-6/4)."""
    names = load_images(data, split).label_names
    if head.label_names and names and head.label_names != names:
        if set(head.label_names) < set(names):
            return list(head.label_names)
        raise DataError(f"the model's classes {head.label_names} are not those of {data} ({names}): pass the dataset "
                        "the model was trained on with --data")
    return None


def _suggest(name: str) -> str:
    import difflib

    plain = name.lower().replace("-", "").replace("_", "")
    close = [s for s in BUILTIN_SETS if s.replace("-", "") == plain] or difflib.get_close_matches(
        name.lower(), BUILTIN_SETS, n=1, cutoff=0.75)
    return f"did you mean {close[0]!r}? " if close else ""


def check_set_names(names: Sequence[str]) -> None:
    """A built-in set's name spelt another way (``Gaussian``, ``cifar-10-c``, ``open_set``) that is no local
    folder is refused now, naming the built-in sets, rather than looked up on the Hub."""
    for name in names:
        if name in BUILTIN_SETS or Path(name).exists():
            continue
        plain = name.lower().replace("-", "").replace("_", "")
        if any(s.replace("-", "") == plain for s in BUILTIN_SETS):
            raise InvalidArgumentError(f"no OOD set {name!r}: {_suggest(name)}The built-in sets are "
                                       f"{', '.join(BUILTIN_SETS)}; a dataset is a local folder or a Hub id owner/name")


def build_sets(names: Sequence[str], head: IntrospectiveHead, data: str, split: str, clean_extra: np.ndarray | None,
               n: int, seed: int = 0, ood_split: str = "test", image_column: str | None = None,
               config: str | None = None, frost_dir: str | None = None) -> list[OODSet]:
    """The named OOD sets (see :data:`~.data.BUILTIN_SETS`; anything else is a ``datasets`` source)."""
    size = tuple(head.input_size()[1:])
    sets = []
    for name in names:
        if name in ("gaussian", "uniform"):
            sets.append(OODSet(name, noise_images(name, n, size, seed), f"{name} noise (ODIN)"))
        elif name == "cifar10c":
            if clean_extra is None or not len(clean_extra):
                raise DataError("cifar10c needs clean test images beyond the ID ones")
            pixels = corrupted_images(clean_extra, 5, seed=seed, frost_dir=frost_dir)
            sets.append(OODSet("cifar10c-5", pixels, f"{data} [{split}], CIFAR-10-C severity 5",
                               {"frost": bool(frost_dir)}))
        elif name == "open-set":
            pixels, unseen = open_set_images(data, split, head.label_names or [], limit=n, seed=seed,
                                             model=head.model)
            sets.append(OODSet("open-set", pixels, f"{data} [{split}], classes {unseen}", {"classes": unseen}))
        else:
            try:
                pixels = load_ood_images(name, ood_split, image_column, config, limit=n, seed=seed, size=size)
            except Exception as err:  # a misspelt built-in name looked up on the Hub: say what the built-ins are
                if "/" in name or Path(name).exists():
                    raise
                raise DataError(f"no OOD set {name!r}: {_suggest(name)}It is not a built-in set "
                                f"({', '.join(BUILTIN_SETS)}) and cannot be loaded as a dataset "
                                f"({type(err).__name__}: {err})") from err
            sets.append(OODSet(set_name(name), pixels, f"{name} [{ood_split}]"))
    return sets


def run_ood(
    model: str | Path,
    ood: Sequence[str] = ("gaussian", "uniform", "cifar10c"),
    out: str | Path | None = None,
    data: str | None = None,
    split: str = "test",
    train_split: str = "train",
    id_images: int = 1000,
    ood_images: int = 1000,
    fit_images: int = 10000,
    conditions: Sequence[str] = CONDITIONS,
    quick: bool = False,
    batch_size: int = 250,
    k: int = 50,
    ood_split: str = "test",
    ood_image_column: str | None = None,
    ood_config: str | None = None,
    frost_dir: str | None = None,
    seed: int = 0,
    plots: bool = True,
    progress: bool = True,
    auto_open_set: bool = False,
    detectors: Sequence[str] = DETECTORS,
) -> dict:
    """Run every detector on f and H of a saved model over its ID test images and the OOD sets ``ood``.

    Args:
        model: folder (or Hub repo) of an introspective model.
        ood: OOD sets: ``gaussian``, ``uniform``, ``cifar10c`` (severity 5, made from test images that are not
            ID ones), ``open-set`` (the classes a class-subset model was not trained on), or a ``datasets``
            source (local folder or Hub id; read with ``ood_split``, ``ood_image_column``, ``ood_config``).
        out: folder for the tables, JSON and plots (nothing is written without it).
        data: the ID dataset (default: the one the model records).
        id_images, ood_images, fit_images: seeded subsets: ID test images, images per OOD set, training images
            the detectors are fitted on. ``quick`` overrides them with :data:`QUICK`.
        conditions: of ``vanilla``, ``attack-f``, ``attack-H``.
        auto_open_set: add ``open-set`` when the model was trained on a class subset of ``data``.
        detectors: the registered detectors to run (``list_detectors()``), by default the benchmark's 19.

    Returns:
        the benchmark result (see :func:`~.benchmark.ood_benchmark`) with ``table`` (markdown, both
        conventions) and ``claims``.
    """
    if quick:
        id_images, ood_images, fit_images = QUICK["id_images"], QUICK["ood_images"], QUICK["fit_images"]
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise InvalidArgumentError(f"unknown condition(s) {unknown}; choose from {', '.join(CONDITIONS)}")
    if not ood:
        raise InvalidArgumentError(f"no OOD sets: name some ({', '.join(BUILTIN_SETS)}, or a dataset folder / Hub id)")
    check_set_names(ood)
    if out is not None:  # a wrong place fails now, not after the benchmark ran (results lost)
        from ...data.outputs import prepare_output

        out = prepare_output(out, "ood")
    start = time.perf_counter()
    head = IntrospectiveHead.from_pretrained(str(model).removeprefix(HF_HUB_PREFIX)).eval()
    data = data or head.dataset
    if not data:
        raise DataError(f"{model} does not record its training data: pass the ID dataset with --data")
    classes = _classes(head, data, split)
    if auto_open_set and classes is not None and "open-set" not in ood:
        ood = [*ood, "open-set"]
    train = load_images(data, train_split, limit=fit_images, seed=seed, classes=classes)
    extra = ood_images if "cifar10c" in ood else 0
    test = load_images(data, split, limit=id_images + extra, seed=seed, classes=classes)
    test.check_names(head.label_names)
    if len(test) < id_images + extra:
        raise DataError(f"{data} [{split}] has {len(test)} images: fewer than {id_images} ID + {extra} for cifar10c")
    test_pixels, test_labels = test.arrays(head.model)  # at f's input size, by its own preprocessing
    sets = build_sets(ood, head, data, split, test_pixels[id_images:], ood_images, seed, ood_split, ood_image_column,
                      ood_config, frost_dir)
    load_s = time.perf_counter() - start
    result = ood_benchmark(head, train.arrays(head.model), (test_pixels[:id_images], test_labels[:id_images]), sets,
                           conditions, batch_size=batch_size, k=k, seed=seed, progress=progress,
                           detectors=detectors)
    result["seconds"]["load"] = load_s
    result["setup"] = {"model": str(model), "data": data, "split": split, "classes": classes, "seed": seed,
                       "sets": {s.name: s.source for s in sets}, "threads": torch.get_num_threads(),
                       "machine": platform.processor() or platform.machine(), "quick": quick,
                       "attack": "L-inf PGD, eps 1/255, 10 steps of 1/255, random start, pixels in [0, 1]"}
    header = (f"OOD benchmark of {model} (ID: {data} [{split}], {len(test_labels[:id_images])} images; detectors "
              f"fitted on {len(train)} [{train_split}] images; {', '.join(f'{s.name} {len(s)}' for s in sets)})")
    result["claims"] = claims(result)
    result["table"] = "\n".join([header, "", result["claims"], "", ood_table(result, "id"), ood_table(result, "ood")])
    if out is not None:
        write_results(result, out, header)
        if plots:
            result["plots"] = ood_plots(result, out)
    result["seconds"]["total_with_io"] = time.perf_counter() - start
    return result
