"""Checks of the records a saved model carries beside its weights (their numbers go into the model card)."""

from __future__ import annotations

from typing import Any

__all__ = ["valid_h_training"]


def valid_h_training(record: Any) -> bool:
    """Whether ``h_training`` is what :func:`~timm_introspect.training.augmented.training_record` writes (its numbers
    go into the model card's line)."""
    def count(value: Any, least: int) -> bool:
        return type(value) is int and value >= least

    if not isinstance(record, dict) or not count(record.get("rows"), 1):
        return False
    images, augmix = record.get("images"), record.get("augmix")
    if images is not None and not count(images, 1) or not isinstance(augmix, dict):
        return False
    if not count(augmix.get("copies"), 0):
        return False
    if augmix["copies"] == 0:
        return True
    operations = augmix.get("operations")
    return (images is not None and all(count(augmix.get(k), 0) for k in ("magnitude", "width"))
            and type(augmix.get("seed")) is int
            and isinstance(operations, list) and all(isinstance(op, str) for op in operations))
