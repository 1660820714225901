"""IntrospectiveHead: r_x from one forward pass of a timm classifier, and H on top of it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import safetensors.torch
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData, ModelHubMixin
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from torch import nn
from tqdm.auto import tqdm

from . import hub

from .classifier import ClassifierLayer, find_classifiers
from .errors import CheckpointError, InputShapeError, NotFittedError, UnsupportedClassifierError
from .features import _promote, conv1x1_weight_grad, functional_weight_grad, linear_weight_grad
from .losses import loss_delta, parse_loss
from .lowrank import FactorizedMLP, RankOneMLP
from .mlp import IntrospectiveMLP
from .scaling import FactorScaler, FeatureScaler

__all__ = ["IntrospectiveHead", "IntrospectiveOutput"]

# the H classes that save their constructor arguments (``config()``) and can be rebuilt on loading
_NETS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (IntrospectiveMLP, RankOneMLP, FactorizedMLP)}


@dataclass
class IntrospectiveOutput:
    """What :class:`IntrospectiveHead` returns.

    Attributes:
        logits: ``(B, N)`` H's prediction from the introspective features.
        base_logits: ``(B, N)`` f's logits, bit-identical to calling the wrapped model.
        features: ``(B, F)`` the scaled, flattened introspective features H saw (``None`` for an H
            that reads them in factored form and never materializes them).
    """

    logits: torch.Tensor
    base_logits: torch.Tensor
    features: torch.Tensor | None = None


def _images(batch: Any) -> torch.Tensor:
    """The image tensor of a batch: a tensor, the first item of a tuple/list, or a dict entry."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("pixel_values", "image", "img", "x"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise TypeError(
        "cannot find images in the batch: yield a tensor, an (images, labels) tuple, or a dict with "
        f"'pixel_values', 'image', 'img' or 'x'; got {type(batch).__name__}"
    )


class IntrospectiveHead(
    nn.Module,
    ModelHubMixin,
    library_name="timm-introspect",
    tags=["image-classification", "timm", "introspective-learning"],
    pipeline_tag="image-classification",
):
    """A trained timm classifier f, its introspective features r_x, and the network H over them.

    For an image x, f gives logits z = W h + b. The introspective features are the gradient of
    J(c * 1_N, z) w.r.t. the classifier weight W, per sample (paper, Eq. 2-6). They come from a
    single forward pass of f: hooks capture the classifier's input h and output, the loss derivative
    is closed-form, and the weight gradient is an outer product (a ``torch.func`` VJP for unusual
    classifier layers). f is frozen and kept in eval mode; its logits are not changed.

    Create it with :meth:`wrap`; call :meth:`fit` on training data to estimate the target ``M``
    (for the "-M" losses) and the [-1, 1] feature scale; then train H (``head.introspective_net``)
    on ``head(x).features``, or call ``head(x).logits``.

    Share it like a timm model: :meth:`save_pretrained`, :meth:`push_to_hub` and
    :meth:`from_pretrained` (from ``huggingface_hub.ModelHubMixin``); the backbone stays loadable
    by plain timm (see :mod:`timm_introspect.hub`).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str = "mse",
        target: float | str = 1.0,
        introspective_net: nn.Module | None = None,
        hidden: Sequence[int] = (300, 100),
        scale: bool = True,
        label_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        loss, suffix_target = parse_loss(loss)
        if suffix_target is not None:
            target = suffix_target
        if isinstance(target, str) and target != "M":
            raise ValueError(f"target must be a number or 'M' (the mean max-logit, fitted by fit()); got {target!r}")

        self.classifiers: list[ClassifierLayer] = find_classifiers(model)
        model.eval().requires_grad_(False)
        self.model = model
        self.loss = loss
        self.target = target
        self.num_classes = int(getattr(model, "num_classes", 0) or self.classifiers[0].weight.shape[0])
        self.feature_shapes = {c.name: tuple(c.weight.shape) for c in self.classifiers}
        self.num_features = sum(math.prod(s) for s in self.feature_shapes.values())
        # target c of the loss: a constant, or NaN until fit() estimates M
        self.register_buffer("target_value", torch.tensor(math.nan if target == "M" else float(target)))
        self.introspective_net = introspective_net or IntrospectiveMLP(self.num_features, self.num_classes, hidden)
        if not scale:
            self.scaler = nn.Identity()
        elif self.takes_factors:
            self.scaler = FactorScaler({c.name: tuple(c.weight.shape[:2]) for c in self.classifiers})
        else:
            self.scaler = FeatureScaler(self.num_features)
        label_names = label_names or (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
        if label_names is not None and len(label_names) != self.num_classes:
            raise ValueError(f"{len(label_names)} label_names for a model with {self.num_classes} classes")
        self.label_names = list(label_names) if label_names is not None else None
        #: evaluation results for the model card: {split: {"f" | "H" | ...: {metric: value}}}
        self.metrics: dict[str, dict[str, dict[str, float]]] = {}
        #: the dataset f and H were trained on (a Hub id or a name), for the model card
        self.dataset: str | None = None

    @classmethod
    def wrap(
        cls,
        model: nn.Module,
        loss: str = "mse",
        target: float | str = 1.0,
        introspective_net: nn.Module | None = None,
        hidden: Sequence[int] = (300, 100),
        scale: bool = True,
        label_names: Sequence[str] | None = None,
    ) -> "IntrospectiveHead":
        """Wrap a trained timm classifier.

        Args:
            model: a timm classifier (``timm.create_model(name, num_classes=N)``), trained. It is
                frozen and put in eval mode.
            loss: introspection loss, one of :data:`timm_introspect.LOSSES`; the paper's ``"mse-M"``
                style names set ``target="M"``.
            target: the constant c of the target ``c * 1_N``, or ``"M"`` for the mean maximum logit
                over the training set (estimated by :meth:`fit`).
            introspective_net: H; by default :class:`IntrospectiveMLP` sized from the model.
            hidden: hidden widths of the default H.
            scale: scale features to [-1, 1] with a :class:`FeatureScaler` fitted by :meth:`fit`.
            label_names: class names (default: the model's ``pretrained_cfg["label_names"]``).
        """
        return cls(
            model, loss=loss, target=target, introspective_net=introspective_net, hidden=hidden, scale=scale,
            label_names=label_names,
        )

    # f stays in eval mode: train() only switches H (and anything else but f).
    def train(self, mode: bool = True) -> "IntrospectiveHead":
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.target_value.device

    def _target(self) -> torch.Tensor:
        if self.target == "M" and torch.isnan(self.target_value):
            raise NotFittedError(
                f"loss {self.loss}-M uses the target M (mean max-logit over the training set), which is not "
                "fitted: call head.fit(train_loader) first, or pass a numeric target"
            )
        return self.target_value

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise InputShapeError(f"expected an image tensor of shape (B, C, H, W), got {type(x).__name__}")
        if x.dim() != 4:
            hint = " (add a batch dimension: x.unsqueeze(0))" if x.dim() == 3 else ""
            raise InputShapeError(
                f"expected a batch of images of shape (B, C, H, W) = (B, {', '.join(map(str, self._input_size()))}), "
                f"got a {x.dim()}-d tensor of shape {tuple(x.shape)}{hint}"
            )
        return x.detach()

    def _input_size(self) -> tuple[int, ...]:
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        return tuple(cfg.get("input_size", ("C", "H", "W")))

    def _run_model(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[tuple[torch.Tensor, torch.Tensor]]]]:
        """f(x), with each classifier call's input h and its output as a grad-enabled leaf."""
        calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {c.name: [] for c in self.classifiers}

        def hook_for(name: str):
            def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
                if len(args) != 1 or not isinstance(output, torch.Tensor):
                    raise UnsupportedClassifierError(
                        f"classifier {name} takes {len(args)} inputs / returns {type(output).__name__}; "
                        "introspection needs one tensor in and one tensor out"
                    )
                leaf = output.detach().requires_grad_(True)
                calls[name].append((args[0].detach(), leaf))
                return leaf

            return hook

        handles = [c.module.register_forward_hook(hook_for(c.name)) for c in self.classifiers]
        try:
            # Only what follows a classifier (pooling, averaging of two heads) is recorded by autograd:
            # f's parameters are frozen and x needs no grad.
            with torch.inference_mode(False), torch.enable_grad():
                logits = self.model(x)
        except Exception as err:
            expected = self._input_size()
            shape_error = isinstance(err, (RuntimeError, AssertionError, ValueError)) and not isinstance(
                err, (torch.OutOfMemoryError, UnsupportedClassifierError))
            if tuple(x.shape[1:]) != expected and shape_error:
                raise InputShapeError(
                    f"the model failed on input of shape {tuple(x.shape)}; it expects (B, {', '.join(map(str, expected))}). "
                    "Preprocess images with timm.data.create_transform(**timm.data.resolve_model_data_config(model)). "
                    f"The model said: {type(err).__name__}: {err}"
                ) from err
            raise
        finally:
            for handle in handles:
                handle.remove()
        if not isinstance(logits, torch.Tensor) or logits.shape != (x.shape[0], self.num_classes):
            raise UnsupportedClassifierError(
                f"the model returned {type(logits).__name__} of shape {getattr(logits, 'shape', None)}; "
                f"introspection needs logits of shape (B, {self.num_classes})"
            )
        if not any(calls.values()):
            raise UnsupportedClassifierError(
                f"the classifier layer(s) {list(calls)} were not called by the model's forward()"
            )
        return logits, calls

    def _output_grads(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, list[tuple[torch.Tensor, torch.Tensor]]]]:
        """f's logits, and for each classifier call its input h and dJ/d(output), per sample."""
        x = self._check_input(x)
        target = self._target()
        logits, calls = self._run_model(x)
        delta = loss_delta(self.loss, logits.detach().to(torch.promote_types(logits.dtype, torch.float32)), target)

        leaves = [leaf for name in calls for _, leaf in calls[name]]
        if len(leaves) == 1 and logits is leaves[0]:
            grads = [delta]  # the classifier output is the logits: dJ/dy = dJ/dz
        else:  # dJ/dy through what follows the classifier (pooling, head averaging): cheap
            grads = torch.autograd.grad(logits, leaves, grad_outputs=delta.to(logits.dtype), allow_unused=True)
        grads_iter = iter(grads)
        # a call whose output does not reach the logits contributes nothing
        pairs = {name: [(h, g) for (h, _), g in zip(layer_calls, grads_iter) if g is not None]
                 for name, layer_calls in calls.items()}
        return logits.detach(), pairs

    def _introspect(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, pairs = self._output_grads(x)
        features: dict[str, torch.Tensor] = {}
        for layer in self.classifiers:
            # a layer called several times gets the sum of its calls' gradients
            parts = [self._weight_grad(layer, h, g) for h, g in pairs[layer.name]]
            if not parts:
                parts = [torch.zeros(x.shape[0], *layer.weight.shape, device=x.device)]
            features[layer.name] = sum(parts[1:], parts[0])
        return logits, features

    def introspective_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """f's logits and r_x in factored form, never materialized: per classifier layer ``(delta, h)``.

        ``delta`` is ``(B, S, N)`` and ``h`` is ``(B, S, d)`` over S positions (1 for a pooled linear
        head), with ``r_x = sum_s delta[:, s, :, None] * h[:, s, None, :]`` (flattened: the raw
        features of :meth:`flat_features`). Only for linear and 1x1-conv classifiers.
        """
        logits, pairs = self._output_grads(x)
        factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer in self.classifiers:
            if layer.kind == "functional":
                raise UnsupportedClassifierError(
                    f"classifier {layer.name} ({type(layer.module).__name__}) has no rank-one gradient: use a "
                    "materialized H (IntrospectiveMLP) for this model"
                )
            deltas, hs = [], []
            for h, g in pairs[layer.name]:
                if layer.kind == "conv1x1":  # positions are the spatial ones: (B, C, H, W) -> (B, HW, C)
                    g, h = g.flatten(2).transpose(1, 2), h.flatten(2).transpose(1, 2)
                g, h = _promote(g, h)
                deltas.append(g.reshape(g.shape[0], -1, g.shape[-1]))
                hs.append(h.reshape(h.shape[0], -1, h.shape[-1]))
            if not deltas:
                n, d = layer.weight.shape[:2]
                deltas, hs = [torch.zeros(x.shape[0], 1, n, device=x.device)], [torch.zeros(x.shape[0], 1, d, device=x.device)]
            factors[layer.name] = (torch.cat(deltas, 1), torch.cat(hs, 1))
        return logits, factors

    @staticmethod
    def _weight_grad(layer: ClassifierLayer, h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if layer.kind == "linear":
            return linear_weight_grad(delta, h)
        if layer.kind == "conv1x1":
            return conv1x1_weight_grad(delta, h)
        return functional_weight_grad(layer.module, h, delta)

    def introspective_features(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The raw introspective features r_x: per-sample dJ/dW for the classifier weight W.

        Returns:
            ``(B, *W.shape)`` (e.g. ``(B, N, d)``) for a model with one classifier; for a model with
            several (e.g. ``deit_*_distilled``: ``head`` and ``head_dist``), a dict from the layer's
            module path to its ``(B, *W.shape)`` gradient.
        """
        _, features = self._introspect(x)
        if len(features) == 1:
            return next(iter(features.values()))
        return features

    def flat_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f's logits ``(B, N)`` and the raw features flattened and concatenated, ``(B, F)``."""
        logits, features = self._introspect(x)
        return logits, torch.cat([f.flatten(1) for f in features.values()], dim=1)

    @property
    def takes_factors(self) -> bool:
        """Whether H reads r_x in factored form (:mod:`timm_introspect.lowrank`) instead of materialized."""
        return bool(getattr(self.introspective_net, "takes_factors", False))

    def forward(self, x: torch.Tensor) -> IntrospectiveOutput:
        if self.takes_factors:
            base_logits, factors = self.introspective_factors(x)
            return IntrospectiveOutput(logits=self.introspective_net(self.scaler(factors)), base_logits=base_logits)
        base_logits, raw = self.flat_features(x)
        features = self.scaler(raw.to(self.target_value.dtype))
        return IntrospectiveOutput(logits=self.introspective_net(features), base_logits=base_logits, features=features)

    @torch.no_grad()
    def fit(self, data: Iterable[Any], max_batches: int | None = None, progress: bool = True) -> "IntrospectiveHead":
        """Estimate target M (for "-M" losses) and the [-1, 1] scale on training data.

        Args:
            data: an iterable of batches (tensors, ``(images, labels)`` tuples, or dicts with
                ``"pixel_values"``/``"image"``), e.g. a ``DataLoader`` over f's training set.
            max_batches: use only the first batches.
            progress: show a progress bar.
        """
        needs_two_passes = self.target == "M" and not isinstance(self.scaler, nn.Identity)
        if needs_two_passes and iter(data) is data:
            raise TypeError(
                "fit() reads the data twice (M, then the scale): pass a re-iterable such as a DataLoader or a list, "
                "not a generator or iterator"
            )

        def batches(desc: str):
            for i, batch in enumerate(tqdm(data, desc=desc, disable=not progress, total=max_batches)):
                if max_batches is not None and i >= max_batches:
                    break
                yield _images(batch).to(self.device)

        if self.target == "M":
            total, count = 0.0, 0
            for x in batches("introspect: target M"):
                logits = self.model(self._check_input(x))
                total += logits.float().amax(-1).sum().item()
                count += logits.shape[0]
            if count == 0:
                raise ValueError("fit() got no batches: pass a non-empty iterable of training images")
            self.target_value.fill_(total / count)
        if isinstance(self.scaler, (FeatureScaler, FactorScaler)):
            self.scaler.reset()
            for x in batches("introspect: feature scale"):
                if isinstance(self.scaler, FactorScaler):
                    self.scaler.update(self.introspective_factors(x)[1])
                else:
                    self.scaler.update(self.flat_features(x)[1])
            if not bool(self.scaler.fitted):
                raise ValueError("fit() got no batches: pass a non-empty iterable of training images")
        return self

    # --- saving and loading (huggingface_hub.ModelHubMixin hooks) ---------------------------------

    def introspection_config(self) -> hub.IntrospectionConfig:
        """The contents of ``introspection_config.json`` for this head."""
        net = self.introspective_net
        net_cfg: dict[str, Any] = {"type": type(net).__name__}
        if type(net).__name__ in _NETS:
            net_cfg.update(net.config())
        package_version, timm_version = hub.timm_versions()
        return hub.IntrospectionConfig(
            loss=self.loss,
            target=self.target,
            num_classes=self.num_classes,
            num_features=self.num_features,
            classifiers=[{"name": c.name, "kind": c.kind, "shape": list(c.weight.shape)} for c in self.classifiers],
            scale=not isinstance(self.scaler, nn.Identity),
            introspective_net=net_cfg,
            label_names=self.label_names,
            cifar_stem=bool(getattr(self.model, "cifar_stem", False)),
            dataset=self.dataset,
            metrics=self.metrics,
            timm_introspect_version=package_version,
            timm_version=timm_version,
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        save_directory = Path(save_directory)
        (save_directory / "README.md").unlink(missing_ok=True)  # the mixin then writes a fresh card
        hub.save_backbone(self.model, save_directory, self.label_names)
        self.introspection_config().to_file(save_directory / hub.INTROSPECTION_CONFIG)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("model.")}
        safetensors.torch.save_file(state, str(save_directory / hub.INTROSPECTION_WEIGHTS), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> "IntrospectiveHead":
        """Load a model saved with :meth:`save_pretrained` / :meth:`push_to_hub` (a folder or a Hub repo id).

        Takes ``huggingface_hub``'s arguments (``revision``, ``cache_dir``, ``force_download``,
        ``local_files_only``, ``token``) plus ``map_location`` and ``introspective_net`` (an H to load the
        saved weights into, for a custom H). Raises :class:`CheckpointError` when anything is missing,
        corrupt or mismatched; nothing is half-loaded.
        """
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except LocalEntryNotFoundError as err:
            raise CheckpointError(
                f"{str(pretrained_model_name_or_path)!r} is not in the local cache and the Hub cannot be reached "
                "(offline?): download it once while online, or pass a local folder"
            ) from err
        except HFValidationError as err:
            raise CheckpointError(
                f"{str(pretrained_model_name_or_path)!r} is neither an existing folder nor a valid Hub repo id "
                "('user/name')"
            ) from err

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str | torch.device = "cpu",
        introspective_net: nn.Module | None = None,
        **unused: Any,
    ) -> "IntrospectiveHead":
        paths = hub.download_files(model_id, revision, cache_dir, force_download, local_files_only, token)
        cfg = hub.IntrospectionConfig.from_file(paths[hub.INTROSPECTION_CONFIG])
        timm_cfg = hub.read_timm_config(paths[hub.TIMM_CONFIG])
        if timm_cfg["num_classes"] != cfg.num_classes:
            raise CheckpointError(
                f"config.json says {timm_cfg['num_classes']} classes but {hub.INTROSPECTION_CONFIG} says "
                f"{cfg.num_classes}: the files come from different models; save the model again"
            )
        model = hub.build_backbone(timm_cfg, paths[hub.TIMM_WEIGHTS], cifar_stem=cfg.cifar_stem)

        if introspective_net is None:
            net_cfg = dict(cfg.introspective_net)
            net_type = net_cfg.pop("type", None)
            if net_type not in _NETS:
                raise CheckpointError(
                    f"H is a custom {net_type!r}: build it and pass it as "
                    "IntrospectiveHead.from_pretrained(..., introspective_net=net); its weights are loaded into it"
                )
        try:
            if introspective_net is None:
                introspective_net = _NETS[net_type](**net_cfg)
            head = cls(model, loss=cfg.loss, target=cfg.target, introspective_net=introspective_net, scale=cfg.scale,
                       label_names=cfg.label_names)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise CheckpointError(
                f"{hub.INTROSPECTION_CONFIG} describes a head that cannot be built ({type(err).__name__}: {err}); "
                "save the model again"
            ) from err
        saved_layers = [(c["name"], tuple(c["shape"])) for c in cfg.classifiers]
        if [(c.name, tuple(c.weight.shape)) for c in head.classifiers] != saved_layers or head.num_features != cfg.num_features:
            raise CheckpointError(
                f"the rebuilt model's classifier layers differ from the saved ones ({saved_layers}); the files come "
                f"from another timm version or model (saved with timm {cfg.timm_version}): install that version"
            )
        hub.load_strict(head, hub.load_tensors(paths[hub.INTROSPECTION_WEIGHTS]), hub.INTROSPECTION_WEIGHTS,
                        skip_prefix="model.")
        head.dataset, head.metrics = cfg.dataset, cfg.metrics
        return head.to(map_location)

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> str:
        """Upload the model (see :meth:`save_pretrained`) and its model card to the Hub repo ``repo_id``.

        Takes the arguments of ``huggingface_hub.ModelHubMixin.push_to_hub`` (``token``, ``private``,
        ``commit_message``, ...). The upload goes from a temporary folder: a failed push changes nothing
        local.
        """
        model_card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=model_card_kwargs, **kwargs)

    def generate_model_card(
        self,
        repo_id: str | None = None,
        model_name: str | None = None,
        metrics: dict[str, dict[str, dict[str, float]]] | None = None,
        dataset: str | None = None,
        license: str | None = None,
    ) -> ModelCard:
        """The model card (``hub_cards/model_card.md``) filled from this model and its metrics.

        Args:
            repo_id: the Hub repo, for the usage snippet.
            model_name: the card's title (default: the repo name).
            metrics: ``{split: {model: {metric: value}}}``, e.g.
                ``{"clean": {"f": {"accuracy": 0.91, "ece": 0.14}, "H": {...}}}``; default ``self.metrics``.
            dataset: the training dataset (default ``self.dataset``).
            license: an SPDX license id for the card's metadata.
        """
        cfg = self.introspection_config()
        metrics = metrics if metrics is not None else self.metrics
        dataset = dataset or self.dataset
        architecture = self.model.pretrained_cfg.get("architecture", type(self.model).__name__)
        model_name = model_name or (repo_id.split("/")[-1] if repo_id else f"{architecture}-introspective")
        repo_id = repo_id or "<user>/<repo>"
        # only a Hub dataset id goes into the metadata; a local folder is named in the text alone
        hub_dataset = dataset if dataset and not Path(dataset).exists() and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", dataset) else None
        results, metric_names, eval_results = [], [], []
        for split, per_model in metrics.items():
            for who, values in per_model.items():
                results.append({"split": split, "model": who,
                                "cells": {m: f"{v:.4f}" if isinstance(v, float) else v for m, v in values.items()}})
                for metric, value in values.items():
                    if metric not in metric_names:
                        metric_names.append(metric)
                    if metric == "count":  # a sample size, not a metric of the model
                        continue
                    eval_results.append(EvalResult(
                        task_type="image-classification", dataset_type=hub_dataset or "custom",
                        dataset_name=f"{hub_dataset or Path(dataset or 'custom').name} ({split})", dataset_split=split,
                        metric_type=metric, metric_value=value, metric_name=f"{metric} ({who})",
                    ))
        card_data = ModelCardData(
            library_name="timm-introspect", tags=["image-classification", "timm", "introspective-learning"],
            pipeline_tag="image-classification", license=license, datasets=[hub_dataset] if hub_dataset else None,
            model_name=model_name, eval_results=eval_results or None,
        )
        net = cfg.introspective_net
        if net.get("type") == "IntrospectiveMLP":
            h_text = f"MLP {' → '.join(map(str, [net['in_features'], *net['hidden'], net['num_classes']]))}, {net['act_layer']} activations"
        elif net.get("type") in _NETS:
            h_text = f"{net['type']} ({', '.join(f'{k}={v}' for k, v in net.items() if k != 'type')}), reading r_x in factored form"
        else:
            h_text = str(net.get("type"))
        template = resources.files("timm_introspect.hub_cards").joinpath("model_card.md").read_text()
        return ModelCard.from_template(
            card_data,
            template_str=template,
            model_name=model_name,
            repo_id=repo_id,
            architecture=architecture,
            cifar_stem=cfg.cifar_stem,
            num_classes=self.num_classes,
            input_size=", ".join(map(str, self._input_size())),
            dataset=dataset,
            loss_name=self.loss.upper() if self.target != "M" else f"{self.loss.upper()}-M",
            target_text=("M = %.4g" % float(self.target_value)) if self.target == "M" else f"{float(self.target_value):g}",
            num_features=self.num_features,
            classifier_text=", ".join(f"{c.name}: {' x '.join(map(str, c.weight.shape))}" for c in self.classifiers),
            scale=cfg.scale,
            h_text=h_text,
            label_names=self.label_names,
            results=results,
            metric_names=metric_names,
            timm_introspect_version=cfg.timm_introspect_version,
            timm_version=cfg.timm_version,
        )

    def extra_repr(self) -> str:
        target = "M" if self.target == "M" else float(self.target_value)
        layers = ", ".join(f"{c.name} ({c.kind})" for c in self.classifiers)
        return f"loss={self.loss}, target={target}, classifiers=[{layers}], num_features={self.num_features}"
