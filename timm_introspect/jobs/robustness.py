"""f, post-hoc calibrated f and H on clean and corrupted images: what the main job and the benchmark report.

:func:`corruption_benchmark` scores a saved introspective model on the clean test images and on every
corruption x severity of CIFAR-10-C (generated on the fly from those images, or given), with

    f        the backbone's softmax
    f+TS     f with temperature scaling, T fitted on held-out clean images that neither f nor H saw
    f+ETS    ensemble temperature scaling (Zhang et al., 2020), fitted on the same images
    DAC+TS   density-aware calibration (Tomani et al., 2023) then TS; and DAC+ETS: both need f's training
             images (k-NN densities at every stage of f), given as ``training``
    H        the introspective network

:func:`calibration_images` rebuilds those held-out images from what the model records, and refuses a
model that records none. :func:`summary_table` prints the comparison (clean, mean over corruptions,
severity 5); :mod:`timm_introspect.jobs.plots` draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from timm.data import resolve_model_data_config

from ..core.calibration import fit_calibrators
from ..core.metrics import classification_metrics, reliability_bins
from ..data.augment import BatchAugment
from ..data.images import LabeledImages, load_images
from ..errors import DataError, InvalidArgumentError
from ..log import tqdm
from ..model.density import DensityScorer, LayerFeatures
from ..model.head import IntrospectiveHead
from ..training.calibrate import Calibration, energy_score, keep_threshold

__all__ = ["MODELS", "calibration_images", "corruption_benchmark", "normalized_batches", "predict_arrays",
           "summary_table", "training_images"]

#: every model the benchmark can score, in table order (the DAC ones only when f's training images are given)
MODELS = ("f", "f+TS", "f+ETS", "DAC+TS", "DAC+ETS", "H")
_KEYS = ("accuracy", "ece", "mce", "nll", "brier")


def normalized_batches(model: torch.nn.Module, images: np.ndarray, batch_size: int = 500) -> Iterator[torch.Tensor]:
    """uint8 images ``(n, H, W, 3)`` at the model's size as its input: ``(B, 3, H, W)`` with its mean and std."""
    cfg = resolve_model_data_config(model)
    if tuple(cfg["input_size"][1:]) != tuple(images.shape[1:3]):
        raise InvalidArgumentError(
            f"the model expects {tuple(cfg['input_size'])} inputs; these images are {tuple(images.shape[1:3])}: "
            "use a model made for them (e.g. a CIFAR-stem architecture such as resnet18_cifar for 32 px)")
    augment = BatchAugment(cfg["mean"], cfg["std"]).eval()
    for i in range(0, len(images), batch_size):
        yield augment(torch.from_numpy(images[i : i + batch_size]).permute(0, 3, 1, 2))


@torch.no_grad()
def predict_arrays(head: IntrospectiveHead, images: np.ndarray,
                   batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """f's and H's logits for uint8 images ``(n, H, W, 3)`` at the model's size, with its mean and std."""
    f_out, h_out = [], []
    head = head.eval()
    for x in normalized_batches(head.model, images, batch_size):
        out = head(x.to(head.device))
        f_out.append(out.base_logits.float().cpu())
        h_out.append(out.logits.float().cpu())
    return torch.cat(f_out), torch.cat(h_out)


def calibration_images(head: IntrospectiveHead) -> LabeledImages:
    """The held-out clean images the model records for temperature scaling (``head.calibration``).

    Raises:
        DataError: the model records none (f was trained on every training image, or H was fitted on the
            held-out ones): temperature scaling would see images f or H trained on.
    """
    record = head.calibration
    if not record:
        raise DataError(
            "this model records no held-out images for temperature scaling: train f with a held-out split "
            "(`train-backbone --holdout 0.1`, or `run --preset cpu`) and fit H on f's training images; T must "
            "never see an image f or H trained on")
    images = load_images(record["data"], record["split"], limit=record.get("limit"), seed=record["seed"],
                         classes=record.get("classes"))
    return images.split_holdout(record["holdout"], record["seed"])[1]


def training_images(head: IntrospectiveHead) -> LabeledImages:
    """f's training images, rebuilt from the held-out record (the complement of :func:`calibration_images`)."""
    calibration_images(head)  # the same checks
    record = head.calibration
    images = load_images(record["data"], record["split"], limit=record.get("limit"), seed=record["seed"],
                         classes=record.get("classes"))
    return images.split_holdout(record["holdout"], record["seed"])[0]


@torch.no_grad()
def _stage_features(model: torch.nn.Module, layers: LayerFeatures, images: np.ndarray,
                    batch_size: int) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    with layers.capture() as got:
        logits = torch.cat([model.eval()(x.to(device)).float().cpu() for x in normalized_batches(model, images,
                                                                                                 batch_size)])
    return [f.cpu() for f in got.features(logits)]


def _means(rows: list[dict], models: Sequence[str]) -> dict[str, dict[str, float]]:
    return {m: {k: float(np.mean([r[m][k] for r in rows])) for k in _KEYS} for m in models}


def corruption_benchmark(
    head: IntrospectiveHead,
    clean: np.ndarray,
    labels: np.ndarray,
    calibration: tuple[np.ndarray, np.ndarray],
    corruptions: Sequence[str],
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    sets: Callable[[str, int], tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
    frost_dir: str | None = None,
    batch_size: int = 500,
    progress: bool = True,
    clean_eval: tuple[np.ndarray, np.ndarray] | None = None,
    dataset: str = "cifar10",
    training: np.ndarray | None = None,
    knn_k: int = 50,
) -> dict:
    """Metrics of f, f+TS, f+ETS, DAC+TS, DAC+ETS and H on ``clean`` and on each corruption x severity.

    Args:
        clean, labels: uint8 test images ``(n, H, W, 3)`` and their labels.
        calibration: held-out clean images and labels for T (see :func:`calibration_images`).
        corruptions, severities: the sets.
        sets: ``(corruption, severity) -> (images, labels)`` for given data (e.g. the release); by default
            each set is generated from ``clean`` with a generator seeded by ``(seed, corruption, severity)``.
        frost_dir: the frost overlays, to generate ``frost``.
        clean_eval: images and labels for the clean row, when it should cover more than ``clean`` (e.g. the
            whole test split while the corrupted sets use a subset).
        dataset: whose generator's parameters make the sets: ``"cifar10"`` (CIFAR-10-C, 32 px) or
            ``"imagenet"`` (ImageNet-C, 224 px images, e.g. from
            :func:`~timm_introspect.data.cifar10c.imagenet_preprocess`).
        training: f's training images (uint8, as ``clean``; :func:`training_images`): with them DAC+TS and
            DAC+ETS are scored too, from k-NN densities (``knn_k``) at every stage of f.
    """
    from ..data.cifar10c import COMMON, CORRUPTIONS, corrupt

    layers = scorer = None
    if training is not None:
        layers = LayerFeatures(head.model)
        k = min(knn_k, len(training))  # a training set smaller than k: its farthest image
        scorer = DensityScorer(k).fit(_stage_features(head.model, layers, training, batch_size))

    def outputs(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if layers is None:
            return (*predict_arrays(head, images, batch_size), None)
        with layers.capture() as got:  # f's stages, in the head's own pass
            f, h = predict_arrays(head, images, batch_size)
        return f, h, scorer(got.features(f))

    f_cal, h_cal, s_cal = outputs(calibration[0])
    methods = ("TS", "ETS", "DAC+TS", "DAC+ETS") if scorer is not None else ("TS", "ETS")
    calibrators = fit_calibrators(f_cal, torch.as_tensor(calibration[1]), s_cal, methods=methods)
    models = [m for m in MODELS if m in ("f", "H") or m in {f"f+{k}" if not k.startswith("DAC") else k
                                                              for k in calibrators}]

    bins: dict[str, dict] = {}  # the clean row's reliability diagrams (the model card's figure)

    def score(images: np.ndarray, y: np.ndarray, diagrams: dict | None = None) -> dict:
        f, h, s = outputs(images)
        y = torch.as_tensor(y)
        scored = {"f": f, **{name if name.startswith("DAC") else f"f+{name}": calibrate(f, s)
                             for name, calibrate in calibrators.items()}, "H": h}
        if diagrams is not None:
            diagrams.update({who: reliability_bins(z, y) for who, z in scored.items()})
        return {who: classification_metrics(z, y) for who, z in scored.items()}

    temperature = calibrators["TS"].temperature  # and the OOD threshold on H, for predictions (apps/predict)
    fitted = Calibration(temperature, ood_threshold=keep_threshold(energy_score(h_cal)), images=len(calibration[1]))
    results: dict = {"temperature": temperature, "models": models, "fitted_calibration": fitted.to_dict(),
                     "calibration_images": len(calibration[1]), "images_per_set": len(clean),
                     "clean": score(*(clean_eval or (clean, labels)), diagrams=bins), "corrupted": [],
                     "clean_reliability": bins}
    desc = {"cifar10": "CIFAR-10-C", "imagenet": "ImageNet-C"}.get(dataset, dataset)
    for c, s in tqdm([(c, s) for c in corruptions for s in severities], desc=desc, disable=not progress):
        if sets is not None:
            images, y = sets(c, s)
        else:  # one seeded generator per corruption and severity: a set does not depend on the others run
            rng = np.random.default_rng([seed, CORRUPTIONS.index(c), s])
            images, y = corrupt(clean, c, s, rng, frost_dir=frost_dir, dataset=dataset), labels
        results["corrupted"].append({"corruption": c, "severity": s, **score(images, y)})
    rows = results["corrupted"]
    if rows:
        results["mean_corrupted"] = _means(rows, models)
        worst = [r for r in rows if r["severity"] == max(severities)]
        results[f"mean_severity_{max(severities)}"] = _means(worst, models)
        common = [r for r in rows if r["corruption"] in COMMON]
        if common and len(common) < len(rows):  # the usual 15 x 5 mean, next to all sets'
            results["mean_common"] = _means(common, models)
    return results


def summary_table(results: dict, keys: Sequence[str] = ("accuracy", "ece", "nll", "brier")) -> str:
    """A Markdown table: every scored model on clean images, the mean over corrupted sets, and the worst severity."""
    rows = [("clean", results["clean"])]
    n = len(results["corrupted"])
    if n:
        rows.append((f"corrupted (mean of {n} sets)", results["mean_corrupted"]))
        if "mean_common" in results:
            rows.append(("15 common (mean)", results["mean_common"]))
        worst = next(k for k in results if k.startswith("mean_severity_"))
        rows.append((f"severity {worst.rsplit('_', 1)[1]} (mean)", results[worst]))
    lines = ["| images | model | " + " | ".join(keys) + " |", "| --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for name, per_model in rows:
        for m in results.get("models", ("f", "f+TS", "H")):
            lines.append(f"| {name} | {m} | " + " | ".join(f"{per_model[m][k]:.4f}" for k in keys) + " |")
    return "\n".join(lines)
