"""``huggingface_hub``'s ``ModelHubMixin`` for :class:`~timm_introspect.IntrospectiveHead`: thin hooks over the
free functions of :mod:`timm_introspect.io.hub` (files) and :mod:`timm_introspect.io.card` (the model card).

Library name, tags and pipeline tag are declared here, once; the card reads them from the mixin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin
from torch import nn

from . import hub
from .card import model_card
from .hub import HeadLike

__all__ = ["IntrospectiveHubMixin"]


class IntrospectiveHubMixin(
    ModelHubMixin,
    library_name="timm-introspect",
    tags=["image-classification", "timm", "introspective-learning"],
    pipeline_tag="image-classification",
):
    """Saving to folders and the Hub (safetensors + model card) and loading back, strictly."""

    def introspection_config(self) -> hub.IntrospectionConfig:
        """The contents of ``introspection_config.json`` for this head."""
        return hub.introspection_config(self)

    def save_pretrained(self, save_directory: str | Path, *, config: Any = None, repo_id: str | None = None,
                        push_to_hub: bool = False, model_card_kwargs: dict[str, Any] | None = None,
                        **push_to_hub_kwargs: Any) -> str | None:
        """Save to a folder (and push with ``push_to_hub=True``); see :mod:`timm_introspect.io.hub` for the layout.

        All or nothing: non-finite weights or a card that cannot be rendered are refused before any file is
        touched, and the files are written beside the folder and moved in only once all are written, so a failed
        save (a full disk, an f timm cannot save) leaves an earlier model there loadable. Other files in the
        folder (a training run's checkpoints, the feature cache) are kept. ``config`` is accepted for
        ``huggingface_hub``'s API and unused: the configuration is the model's own.
        """
        hub.save_head(self, save_directory, card_kwargs=model_card_kwargs)
        if push_to_hub:
            return self.push_to_hub(repo_id or Path(save_directory).name, model_card_kwargs=model_card_kwargs,
                                    **push_to_hub_kwargs)
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        hub.save_head(self, save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, revision: str | None = None,
                        cache_dir: str | Path | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None,
                        map_location: str | torch.device = "cpu", introspective_net: nn.Module | None = None,
                        **unused: Any) -> HeadLike:
        """Load a model saved with :meth:`save_pretrained` / :meth:`push_to_hub`: a folder, or a Hub repo id
        (``"user/name"``, or timm's ``"hf-hub:user/name"``).

        Takes ``huggingface_hub``'s arguments (``revision``, ``cache_dir``, ``force_download``,
        ``local_files_only``, ``token``) plus ``map_location`` and ``introspective_net`` (an H to load the
        saved weights into, for an H that is not registered). Every file is checked by
        :mod:`timm_introspect.io.hub` (not by the mixin's generic loader, which would parse ``config.json``
        unchecked); anything missing, corrupt or mismatched raises :class:`CheckpointError`, and nothing is
        half-loaded.
        """
        model_id = str(pretrained_model_name_or_path)
        if model_id.startswith("hf-hub:") and not Path(model_id).exists():  # timm's spelling of a Hub id
            model_id = model_id[len("hf-hub:"):]
        # a missing folder, an invalid id or an unreachable Hub: CheckpointError from io.checkpoint.hub_download
        return cls._from_pretrained(model_id=model_id, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token,
                                    map_location=map_location, introspective_net=introspective_net)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         map_location: str | torch.device = "cpu", introspective_net: nn.Module | None = None,
                         **unused: Any) -> HeadLike:
        return hub.load_head(cls, model_id, revision, cache_dir, force_download, local_files_only, token,
                             map_location=map_location, introspective_net=introspective_net)

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> str:
        """Upload the model (see :meth:`save_pretrained`) and its model card to the Hub repo ``repo_id``.

        Takes the arguments of ``huggingface_hub.ModelHubMixin.push_to_hub`` (``token``, ``private``,
        ``commit_message``, ...). The upload goes from a temporary folder: a failed push changes nothing
        local.
        """
        model_card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=model_card_kwargs, **kwargs)

    def generate_model_card(self, repo_id: str | None = None, model_name: str | None = None,
                            metrics: dict[str, dict[str, dict[str, float]]] | None = None,
                            dataset: str | None = None, license: str | None = None,
                            figures: list[str] | None = None) -> ModelCard:
        """The model card (``hub_cards/model_card.md``) filled from this model and its metrics.

        Args:
            repo_id: the Hub repo, for the usage snippet.
            model_name: the card's title (default: the repo name).
            metrics: ``{split: {model: {metric: value}}}``, e.g.
                ``{"clean": {"f": {"accuracy": 0.91, "ece": 0.14}, "H": {...}}}``; default ``self.metrics``.
            dataset: the training dataset (default ``self.dataset``).
            license: an SPDX license id for the card's metadata.
            figures: names of the PNG files beside the card to show (``save_pretrained`` / ``push_to_hub`` draw
                and pass them: :mod:`timm_introspect.io.figures`).
        """
        return model_card(self, repo_id=repo_id, model_name=model_name, metrics=metrics, dataset=dataset,
                          license=license, figures=figures)
