"""The active-learning loop: train f and fit H on the labeled images, evaluate, query, label; every round saved.

Round k (k = 0 .. ``rounds``) trains f on the labeled set L_k (re-initialized, or continued from f_{k-1}), fits
H on f's r_x of L_k, scores f and H on every test set, and (except after the last round) queries
``query_size`` pool images with the strategy through f or H; L_{k+1} = L_k + the query. Then the round is
written to ``<out>/rounds/round-NNN/`` (atomically: a folder renamed into place):

* ``weights.safetensors``: f, target M, the scale and H (the :class:`~timm_introspect.IntrospectiveHead`'s state);
* ``state.json``: the labeled indices L_k in acquisition order, the query, the history of every round so far
  (metrics, sizes, times), the run's settings and data fingerprint, and the sha256 of the weights.

Every random draw of round k is seeded by ``(seed, k)`` alone (f's initialization, data order, augmentation,
H, dropout masks, the strategy's draws), and the previous round passes on only L_k, the query and (with
``reset=False``) f's weights, which safetensors stores exactly: a killed run started again with the same
arguments resumes after its last finished round and ends with the same labeled sets and metrics as an
uninterrupted one (exactly on a CPU; on a GPU only with deterministic kernels, ``torch.use_deterministic_algorithms``,
since cuDNN's defaults differ between any two runs). The result is written to ``<out>/result.json``.

The loop runs in one process (one CPU or GPU); run several experiments side by side as separate processes
(``benchmarks/active_learning.py --jobs``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import timm
import torch

from ...errors import CheckpointError, InvalidArgumentError
from ...io.checkpoint import give_default_mode, load_strict, load_tensors, read_json
from ...log import tqdm
from ...model.head import IntrospectiveHead
from ...nets.mlp import IntrospectiveMLP
from ...training.loop import exclusive_run
from .config import ActiveConfig
from .data import ActiveData
from .learner import evaluate_round, fit_h, train_f
from .pool import LabeledPool
from .strategies import create_strategy

__all__ = ["load_round", "round_seed", "run_active_learning"]

WEIGHTS, STATE = "weights.safetensors", "state.json"


def round_seed(seed: int, round_index: int, part: int) -> int:
    """The seed of one part (0 f, 1 H, 2 query) of one round: a function of ``(seed, round, part)`` only."""
    return int(np.random.SeedSequence([seed, round_index, part]).generate_state(1)[0])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _round_dir(out: Path, k: int) -> Path:
    return out / "rounds" / f"round-{k:03d}"


def _finished_rounds(out: Path) -> list[Path]:
    folder = out / "rounds"
    return sorted(p for p in folder.glob("round-[0-9][0-9][0-9]") if (p / STATE).is_file()) if folder.is_dir() else []


def _save_round(out: Path, k: int, head: IntrospectiveHead, state: dict[str, Any], keep_weights: int) -> None:
    final, tmp = _round_dir(out, k), out / "rounds" / f"round-{k:03d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in head.state_dict().items()}
    safetensors.torch.save_file(tensors, str(tmp / WEIGHTS))
    state = {**state, "files": {WEIGHTS: _sha256(tmp / WEIGHTS)}}
    (tmp / STATE).write_text(json.dumps(state))
    give_default_mode(tmp)  # safetensors writes 0600
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in _finished_rounds(out)[:-keep_weights] if keep_weights > 0 else []:
        (old / WEIGHTS).unlink(missing_ok=True)  # the history stays in every state.json


def _read_weights(folder: Path, state: dict[str, Any]) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path} was removed (only the latest rounds keep their weights): resume from the "
                              f"latest round, or delete {folder.parent.parent} to start over")
    if _sha256(path) != state["files"][WEIGHTS]:
        raise CheckpointError(
            f"{path} is damaged (its sha256 differs from the one {folder / STATE} recorded): delete {folder} to "
            "resume from the round before it, or its run folder to start over")
    return load_tensors(path)


def _build_head(config: ActiveConfig, num_classes: int) -> IntrospectiveHead:
    model = timm.create_model(config.model, num_classes=num_classes, drop_rate=config.f_drop_rate)
    dim = model.get_classifier().in_features
    net = IntrospectiveMLP(num_classes * dim, num_classes, config.hidden, drop_rate=config.h_drop_rate)
    return IntrospectiveHead.wrap(model, loss=config.loss, introspective_net=net, scale=config.scale)


def load_round(out_dir: str | Path, round_index: int | None = None) -> tuple[IntrospectiveHead, dict[str, Any]]:
    """f and H of a saved round (default: the latest), and its ``state.json``."""
    out = Path(out_dir)
    rounds = _finished_rounds(out)
    if not rounds:
        raise CheckpointError(f"{out} holds no finished round: run the active-learning loop there first")
    folder = rounds[-1] if round_index is None else _round_dir(out, round_index)
    if not (folder / STATE).is_file():
        raise CheckpointError(f"{folder} is not a finished round; finished: {[p.name for p in rounds]}")
    state = read_json(folder / STATE, STATE)
    head = _build_head(ActiveConfig(**state["signature"]["config"]), state["signature"]["num_classes"])
    load_strict(head, _read_weights(folder, state), f"{folder / WEIGHTS}")
    return head.eval(), state


def _resume(out: Path, signature: dict[str, Any]) -> dict[str, Any] | None:
    rounds = _finished_rounds(out)
    if not rounds:
        return None
    state = read_json(rounds[-1] / STATE, STATE)
    if state.get("signature") != json.loads(json.dumps(signature)):
        raise InvalidArgumentError(
            f"{rounds[-1]} was written by an active-learning run with other settings or data ({state.get('signature')})"
            f"; this run: {signature}. Use a new output folder, or delete {out / 'rounds'} to start over")
    return {**state, "folder": rounds[-1]}


def run_active_learning(
    data: ActiveData,
    config: ActiveConfig,
    out_dir: str | Path,
    keep_weights: int = 2,
    progress: bool = True,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) an active-learning experiment; returns what ``<out>/result.json`` holds.

    Args:
        data: the pool and the test sets.
        config: strategy, via, rounds, and f's and H's training.
        out_dir: the run's folder (one run per folder; a second process writing to it is refused).
        keep_weights: rounds whose weights are kept (every round keeps its ``state.json``).
        progress: progress bars.
        on_round: called with ``(round, record)`` after each round is saved.

    Returns:
        ``{"config", "data", "history": [{"round", "labeled_images", "metrics": {set: {"f"|"H": {...}}},
        "queried", "seconds"}, ...], "labeled"}``; with ``config.until_train_accuracy`` each round also holds
        ``"training": {"f"|"H": {"epochs", "train_accuracy", "reached", "accuracy_per_epoch"}}``.
    """
    out = Path(out_dir)
    signature = {"config": config.to_dict(), "data": data.fingerprint(), "num_classes": data.num_classes,
                 "pool_size": len(data.pool_labels)}
    if config.initial + config.rounds * config.query_size > len(data.pool_labels):
        raise InvalidArgumentError(
            f"{config.initial} + {config.rounds} x {config.query_size} labels need a pool of at least "
            f"{config.initial + config.rounds * config.query_size} images; this one has {len(data.pool_labels)}")
    with exclusive_run(out):
        state = _resume(out, signature)
        init_state = None
        if state is None:
            pool = LabeledPool.random(len(data.pool_labels), config.initial, [config.seed, 0, 3])
            history: list[dict[str, Any]] = []
            start = 0
        else:
            pool = LabeledPool.from_state(state["pool"])
            history = state["history"]
            start = state["round"] + 1
            if start <= config.rounds:
                pool.add(state["queried"])
                if not config.reset:
                    tensors = _read_weights(state["folder"], state)
                    init_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        bar = tqdm(range(start, config.rounds + 1), desc=f"active {config.strategy} via {config.via}",
                   disable=not progress, initial=start, total=config.rounds + 1)
        for k in bar:
            t0 = time.perf_counter()
            labeled = pool.labeled
            images, labels = data.pool_images[labeled], data.pool_labels[labeled]
            training: dict[str, dict[str, Any]] = {"f": {}, "H": {}}
            model = train_f(images, labels, data.num_classes, config, round_seed(config.seed, k, 0), out,
                            init_state, desc=f"round {k} f", stats=training["f"])
            t1 = time.perf_counter()
            head = fit_h(model, images, labels, config, round_seed(config.seed, k, 1), out, desc=f"round {k} H",
                         stats=training["H"])
            t2 = time.perf_counter()
            metrics = evaluate_round(head, data.test_sets, config.eval_batch_size)
            t3 = time.perf_counter()
            queried: list[int] = []
            if k < config.rounds:
                torch.manual_seed(round_seed(config.seed, k, 2))  # the dropout masks of BALD
                strategy = create_strategy(config.strategy, pool, data.pool_images, head, config.via,
                                           seed=[config.seed, k, 2], batch_size=config.eval_batch_size,
                                           mc_passes=config.mc_passes)
                queried = strategy.query(config.query_size).tolist()
            t4 = time.perf_counter()
            record = {"round": k, "labeled_images": len(pool), "metrics": metrics, "queried": queried,
                      "seconds": {"train_f": t1 - t0, "fit_h": t2 - t1, "evaluate": t3 - t2, "query": t4 - t3}}
            if config.until_train_accuracy is not None:
                record["training"] = training  # epochs trained and the final training accuracy of f and of H
            history.append(record)
            _save_round(out, k, head, {"round": k, "signature": signature, "pool": pool.state_dict(),
                                       "queried": queried, "history": history}, keep_weights)
            bar.set_postfix({f"{s} {m}": f"{metrics[s][m]['accuracy']:.3f}" for s in metrics for m in ("f", "H")})
            if on_round is not None:
                on_round(k, record)
            if queried:
                pool.add(queried)
            if not config.reset:
                init_state = {n: t.detach().cpu().clone() for n, t in head.model.state_dict().items()}
        result = {"config": config.to_dict(), "data": data.source, "fingerprint": signature["data"],
                  "history": history, "labeled": pool.labeled.tolist()}
        (out / "result.json").write_text(json.dumps(result))
    return result
