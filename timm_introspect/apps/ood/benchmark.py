"""Every detector on f and on H, over in-distribution and OOD images, vanilla and under attack.

:func:`build_detectors` fits the detectors on one pass over training images; :func:`ood_benchmark` scores
ID and OOD images under three conditions and computes the metrics in both conventions:

    vanilla     the images as they are
    attack-f    PGD against f (the paper's setting): ID toward uniform, OOD toward confident predictions
    attack-H    the same PGD against H, adaptively (the gradient through r_x)

Every detector scores every condition's images, so a detector on H under ``attack-f`` is the paper's
transfer setting and under ``attack-H`` the white-box one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_ood.detector import KNN, ODIN, EnergyBased, Mahalanobis, MaxLogit, MaxSoftmax, ReAct, ViM
from timm.data import resolve_model_data_config
from tqdm.auto import tqdm

from ...errors import InvalidArgumentError
from ...model.head import IntrospectiveHead
from .attack import Normalize, pgd_attack
from .data import OODSet
from .detectors import IntrospectiveKNN, IntrospectiveODIN, gradnorm_score
from .metrics import ood_metrics
from .path import IntrospectiveLogits, IntrospectivePass, Penultimate, introspective_pass

__all__ = ["CONDITIONS", "Detector", "build_detectors", "ood_benchmark", "represent"]

CONDITIONS = ("vanilla", "attack-f", "attack-H")


@dataclass
class Detector:
    """A detector in the benchmark: its name, the model it reads (``"f"`` or ``"H"``), whether it is a classic
    post-hoc detector on f (``"classic"``) or one on introspection (``"introspective"``), and its scorer
    ``(pass, normalized images) -> (B,) scores``."""

    name: str
    on: str
    family: str
    score: Callable[[IntrospectivePass, torch.Tensor], torch.Tensor]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.on})"


@dataclass
class Representations:
    """Concatenated outputs of :func:`introspective_pass` over a set of images (no graph)."""

    base_logits: torch.Tensor
    logits: torch.Tensor
    penultimate: torch.Tensor | None
    hidden: list[torch.Tensor]
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]


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
    return Representations(cat(lambda p: p.base_logits), cat(lambda p: p.logits), penult, hidden, factors)


def _normalize(head: IntrospectiveHead) -> Normalize:
    cfg = resolve_model_data_config(head.model)
    return Normalize(cfg["mean"], cfg["std"]).to(head.device)


def build_detectors(head: IntrospectiveHead, train: Representations, labels: torch.Tensor, k: int = 50,
                    odin: bool = True) -> tuple[list[Detector], dict[str, str]]:
    """Fit every detector on the training representations; returns them and, per detector left out, why."""
    std = list(resolve_model_data_config(head.model)["std"])
    f = head.model
    dets = [
        Detector("MSP", "f", "classic", lambda p, x: MaxSoftmax(None).predict_logits(p.base_logits)),
        Detector("MaxLogit", "f", "classic", lambda p, x: MaxLogit(None).predict_logits(p.base_logits)),
        Detector("Energy", "f", "classic", lambda p, x: EnergyBased(None).predict_logits(p.base_logits)),
        Detector("MSP", "H", "introspective", lambda p, x: MaxSoftmax(None).predict_logits(p.logits)),
        Detector("MaxLogit", "H", "introspective", lambda p, x: MaxLogit(None).predict_logits(p.logits)),
        Detector("Energy", "H", "introspective", lambda p, x: EnergyBased(None).predict_logits(p.logits)),
    ]
    skipped: dict[str, str] = {}
    if odin:
        odin_f, odin_h = ODIN(f, norm_std=std), IntrospectiveODIN(head, norm_std=std)
        dets += [Detector("ODIN", "f", "classic", lambda p, x: odin_f.predict(x)),
                 Detector("ODIN", "H", "introspective", lambda p, x: odin_h.predict(x))]
    k = min(k, len(labels))
    classifier = f.get_classifier()
    if train.penultimate is not None and isinstance(classifier, torch.nn.Linear):
        z = train.penultimate
        maha = Mahalanobis(None).fit_features(z, labels)
        knn = KNN(None, k=k).fit_features(z, labels)
        vim = ViM(None, d=z.shape[1] // 2, w=classifier.weight, b=classifier.bias).fit_features(z, labels)
        react = ReAct(Penultimate(f), classifier).fit_feature_maps(z, labels)
        dets += [
            Detector("GradNorm", "f", "classic", lambda p, x: gradnorm_score(p.base_logits, p.penultimate)),
            Detector("ReAct", "f", "classic", lambda p, x: react.predict_feature_maps(p.penultimate)),
            Detector("Mahalanobis", "f", "classic", lambda p, x: maha.predict_features(p.penultimate)),
            Detector("KNN", "f", "classic", lambda p, x: knn.predict_features(p.penultimate)),
            Detector("ViM", "f", "classic", lambda p, x: vim.predict_features(p.penultimate)),
        ]
    else:
        skipped["feature baselines on f"] = "f has no single pooled linear classifier"
    if train.hidden:
        last = [m for m in head.introspective_net.modules() if isinstance(m, torch.nn.Linear)][-1]
        a = train.hidden[-1]
        maha_h = Mahalanobis(None).fit_features(a, labels)
        maha_h0 = Mahalanobis(None).fit_features(train.hidden[0], labels)
        knn_h = KNN(None, k=k).fit_features(a, labels)
        vim_h = ViM(None, d=a.shape[1] // 2, w=last.weight, b=last.bias).fit_features(a, labels)
        dets += [
            Detector("GradNorm", "H", "introspective", lambda p, x: gradnorm_score(p.logits, p.hidden[-1])),
            Detector("Mahalanobis", "H", "introspective", lambda p, x: maha_h.predict_features(p.hidden[-1])),
            Detector("Mahalanobis-1st", "H", "introspective", lambda p, x: maha_h0.predict_features(p.hidden[0])),
            Detector("KNN", "H", "introspective", lambda p, x: knn_h.predict_features(p.hidden[-1])),
            Detector("ViM", "H", "introspective", lambda p, x: vim_h.predict_features(p.hidden[-1])),
        ]
    else:
        skipped["feature detectors on H"] = "H has no hidden layer read through nn.Linear"
    try:
        knn_r = IntrospectiveKNN(None, k=k).fit_structured(train.factors)
        dets.append(Detector("KNN r_x", "H", "introspective", lambda p, x: knn_r.predict_structured(p.factors)))
    except (InvalidArgumentError, ValueError) as err:
        skipped["KNN r_x"] = str(err)
    return dets, skipped


def _score(head: IntrospectiveHead, dets: Sequence[Detector], pixels: torch.Tensor,
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
            scores[d.label].append(d.score(p, x).detach().double().cpu())
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
) -> dict:
    """Fit the detectors on ``train``, score ``test`` (ID) and every OOD set under each condition.

    Args:
        head: a fitted introspective model (on its device, in eval mode).
        train, test: uint8 images ``(n, H, W, 3)`` and labels: detectors are fitted on ``train``; ``test`` is ID.
        sets: the OOD sets.
        conditions: a subset of :data:`CONDITIONS`.
        k: KNN's neighbour (capped at the number of training images).
        eps, steps: PGD's radius (also its step size) and step count.

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
    dets, skipped = build_detectors(head, train_rep, torch.as_tensor(train[1]), k=k)
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
