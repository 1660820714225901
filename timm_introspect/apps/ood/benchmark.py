"""Every detector on f and on H, over in-distribution and OOD images, vanilla and under attack.

The detectors are the package's registered ones (:mod:`.registry`, :mod:`.baselines`, :mod:`.detectors`), run by
name (:data:`DETECTORS`). :func:`build_detectors` fits them on one pass over training images; :func:`ood_benchmark`
scores ID and OOD images under three conditions, one introspective pass per batch read by every detector
(:meth:`~.registry.PassDetector.predict_pass`), and computes the metrics in both conventions:

    vanilla     the images as they are
    attack-f    PGD against f (the paper's setting): ID toward uniform, OOD toward confident predictions
    attack-H    the same PGD against H, adaptively (the gradient through r_x)

Every detector scores every condition's images, so a detector on H under ``attack-f`` is the paper's
transfer setting and under ``attack-H`` the white-box one.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_ood.detector import ODIN
from timm.data import resolve_model_data_config

from ...errors import IntrospectionError, InvalidArgumentError
from ...log import tqdm
from ...model.head import IntrospectiveHead
from .attack import Normalize, pgd_attack
from .data import OODSet
from .metrics import ood_metrics
from .path import IntrospectiveLogits, IntrospectivePass, introspective_pass
from .registry import PassDetector, create_detector, get_detector_class

__all__ = ["CONDITIONS", "DETECTORS", "build_detectors", "ood_benchmark", "represent"]

CONDITIONS = ("vanilla", "attack-f", "attack-H")

#: the benchmark's detectors (names of :func:`~.registry.list_detectors`), in the order of its tables
DETECTORS = ("msp_f", "maxlogit_f", "energy_f", "msp_h", "maxlogit_h", "energy_h", "odin_f", "odin_h",
             "gradnorm_f", "react_f", "mahalanobis_f", "knn_f", "vim_f",
             "gradnorm_h", "mahalanobis_h", "mahalanobis_1st_h", "knn_h", "vim_h", "knn_rx")


@dataclass
class Representations:
    """Concatenated outputs of :func:`introspective_pass` over a set of images (no graph): what
    :meth:`~.registry.PassDetector.fit_pass` reads."""

    base_logits: torch.Tensor
    logits: torch.Tensor
    penultimate: torch.Tensor | None
    hidden: list[torch.Tensor]
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    head_output_is_linear: bool = False


def _batches(pixels: torch.Tensor, batch_size: int):
    for i in range(0, len(pixels), batch_size):
        yield pixels[i : i + batch_size]


@torch.no_grad()
def represent(head: IntrospectiveHead, pixels: torch.Tensor, batch_size: int = 250) -> Representations:
    """The introspective pass over float pixels ``(n, C, H, W)`` in [0, 1], concatenated (on the CPU)."""
    normalize = _normalize(head)
    parts: list[IntrospectivePass] = [introspective_pass(head, normalize(x.to(head.device)))
                                      for x in _batches(pixels, batch_size)]

    def cat(get):
        return torch.cat([get(p).detach().cpu() for p in parts])

    penult = cat(lambda p: p.penultimate) if parts[0].penultimate is not None else None
    hidden = [cat(lambda p, i=i: p.hidden[i]) for i in range(len(parts[0].hidden))]
    factors = {name: (cat(lambda p, n=name: p.factors[n][0]), cat(lambda p, n=name: p.factors[n][1]))
               for name in parts[0].factors}
    return Representations(cat(lambda p: p.base_logits), cat(lambda p: p.logits), penult, hidden, factors,
                           parts[0].head_output_is_linear)


def _normalize(head: IntrospectiveHead) -> Normalize:
    cfg = resolve_model_data_config(head.model)
    return Normalize(cfg["mean"], cfg["std"]).to(head.device)


def build_detectors(head: IntrospectiveHead, train: Representations, labels: torch.Tensor, k: int = 50,
                    odin: bool = True, detectors: Sequence[str] = DETECTORS,
                    ) -> tuple[list[PassDetector], dict[str, str]]:
    """Create the registered ``detectors`` by name and fit them on the training representations.

    Args:
        head: the introspective model they read.
        train, labels: :func:`represent` of the training images, and their labels.
        k: the neighbour of the KNN detectors (every detector whose constructor takes ``k``), capped at the number
            of training images.
        odin: include the ODIN detectors (an extra forward and backward pass per batch each).
        detectors: names from :func:`~.registry.list_detectors`.

    Returns:
        The fitted detectors, and, per detector left out (it cannot read this model), why.
    """
    k = min(k, len(labels))
    dets: list[PassDetector] = []
    skipped: dict[str, str] = {}
    for name in detectors:
        cls = get_detector_class(name)
        if not odin and issubclass(cls, ODIN):
            continue
        kwargs = {"k": k} if "k" in inspect.signature(cls).parameters else {}
        try:
            dets.append(create_detector(name, head, **kwargs).fit_pass(train, labels))
        except (IntrospectionError, ValueError) as err:
            skipped[name] = str(err)
    return dets, skipped


def _score(head: IntrospectiveHead, dets: Sequence[PassDetector], pixels: torch.Tensor,
           batch_size: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Scores of every detector, and f's and H's predicted classes, for float pixels ``(n, C, H, W)``."""
    normalize = _normalize(head)
    scores: dict[str, list[torch.Tensor]] = {d.label: [] for d in dets}
    preds: dict[str, list[torch.Tensor]] = {"f": [], "H": []}
    for batch in _batches(pixels, batch_size):
        x = normalize(batch.to(head.device))
        with torch.no_grad():
            p = introspective_pass(head, x)
        preds["f"].append(p.base_logits.argmax(1).cpu())
        preds["H"].append(p.logits.argmax(1).cpu())
        for d in dets:
            scores[d.label].append(d.predict_pass(p, x).detach().double().cpu())
    return ({k: torch.cat(v).numpy() for k, v in scores.items()}, {k: torch.cat(v).numpy() for k, v in preds.items()})


def _attack(head: IntrospectiveHead, pixels: torch.Tensor, condition: str, goal: str, batch_size: int, seed: int,
            eps: float, steps: int) -> torch.Tensor:
    if condition == "vanilla":
        return pixels
    model = head.model if condition == "attack-f" else IntrospectiveLogits(head)
    normalize = _normalize(head)
    out = []
    for i, batch in enumerate(_batches(pixels, batch_size)):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
        out.append(pgd_attack(model, batch.to(head.device), goal, normalize, eps=eps, steps=steps, step_size=eps,
                              generator=generator).cpu())
    return torch.cat(out)


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)


def ood_benchmark(
    head: IntrospectiveHead,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    sets: Sequence[OODSet],
    conditions: Sequence[str] = CONDITIONS,
    batch_size: int = 250,
    k: int = 50,
    eps: float = 1 / 255,
    steps: int = 10,
    seed: int = 0,
    progress: bool = True,
    detectors: Sequence[str] = DETECTORS,
) -> dict:
    """Fit the detectors on ``train``, score ``test`` (ID) and every OOD set under each condition.

    Args:
        head: a fitted introspective model (on its device, in eval mode).
        train, test: uint8 images ``(n, H, W, 3)`` and labels: detectors are fitted on ``train``; ``test`` is ID.
        sets: the OOD sets.
        conditions: a subset of :data:`CONDITIONS`.
        k: KNN's neighbour (capped at the number of training images).
        eps, steps: PGD's radius (also its step size) and step count.
        detectors: the registered detectors to run (:func:`~.registry.list_detectors`), in the tables' order.

    Returns:
        ``{"conditions": {condition: {"accuracy": {"f", "H"}, "sets": {set: {detector: {"on", "family",
        "metrics": {"id": ..., "ood": ...}}}}}}, "scores": ..., "detectors": ..., "skipped": ..., "seconds": ...}``
        (``scores`` holds the raw scores, for the plots; it is not JSON).
    """
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise InvalidArgumentError(f"unknown condition(s) {unknown}; choose from {CONDITIONS}")
    head = head.eval()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    train_rep = represent(head, _pixels(train[0]), batch_size)
    dets, skipped = build_detectors(head, train_rep, torch.as_tensor(train[1]), k=k, detectors=detectors)
    seconds["fit"] = time.perf_counter() - start
    id_labels = np.asarray(test[1])
    results: dict = {"conditions": {}, "scores": {}, "skipped": skipped, "seconds": seconds,
                     "detectors": [{"name": d.name, "on": d.on, "family": d.family} for d in dets],
                     "images": {"train": len(train[0]), "id": len(test[0]), **{s.name: len(s) for s in sets}}}
    jobs = [(c, s) for c in conditions for s in [None, *sets]]
    for c_i, (condition, ood_set) in enumerate(tqdm(jobs, desc="OOD benchmark", disable=not progress)):
        t0 = time.perf_counter()
        name = "id" if ood_set is None else ood_set.name
        images = test[0] if ood_set is None else ood_set.pixels
        goal = "uniform" if ood_set is None else "confident"
        pixels = _attack(head, _pixels(images), condition, goal, batch_size, seed + c_i, eps, steps)
        scores, preds = _score(head, dets, pixels, batch_size)
        results["scores"].setdefault(condition, {})[name] = scores
        entry = results["conditions"].setdefault(condition, {"sets": {}})
        if ood_set is None:
            entry["accuracy"] = {m: float((preds[m] == id_labels).mean()) for m in ("f", "H")}
        else:
            id_scores = results["scores"][condition]["id"]
            entry["sets"][name] = {
                d.label: {"name": d.name, "on": d.on, "family": d.family,
                          "metrics": {pos: ood_metrics(id_scores[d.label], scores[d.label], pos)
                                      for pos in ("id", "ood")}}
                for d in dets}
        seconds[f"{condition}/{name}"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    return results
