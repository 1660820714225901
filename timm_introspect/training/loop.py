"""Training with ``accelerate``: one loop for f (the backbone) and for H, resumable.

The same code runs on one CPU, one GPU, or many processes (``accelerate launch`` / ``torchrun``).
Checkpoints (``accelerator.save_state``) are written at the end of every epoch under
``<out>/checkpoints/epoch-NNNN``; a run started again with the same arguments resumes from the
latest one. Data order depends only on the seed and the epoch (a seedable sampler), so a resumed
run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch import nn

from ..errors import CheckpointError, DivergedError, RunLockedError
from ..io.checkpoint import give_default_mode
from ..log import tqdm

__all__ = ["Schedule", "exclusive_run", "make_accelerator", "train_loop"]

log = logging.getLogger(__name__)


@dataclass
class Schedule:
    """An SGD schedule. ``kind="paper"``: lr steps x0.2 after 30 %, 60 %, 80 % of the epochs
    (60 / 120 / 160 of 200, the paper's Appendix C.1); ``kind="onecycle"``: a linear warm-up over the
    first ``warmup`` of the steps, then a cosine down to ~0; ``kind="linear"``: the same warm-up, then a
    straight line down to 0 (the CPU recipe).

    ``label_smoothing`` applies to f's cross-entropy; ``nesterov`` to SGD; ``decay_1d=False`` exempts
    1-d parameters (norms, biases) from weight decay, as timm's optimizer factory does.
    """

    epochs: int
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    kind: Literal["paper", "onecycle", "linear"] = "paper"
    warmup: float = 0.15
    label_smoothing: float = 0.0
    nesterov: bool = False
    decay_1d: bool = True

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        total = max(1, self.epochs * steps_per_epoch)
        if self.kind == "paper":
            epoch = step / max(1, steps_per_epoch)
            return 0.2 ** sum(epoch >= m * self.epochs for m in (0.3, 0.6, 0.8))
        warm = max(1, int(self.warmup * total))
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        if self.kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1 + math.cos(math.pi * progress))

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """SGD over ``model``'s trainable parameters. Those named by ``model.no_weight_decay()`` (timm's
        method name; here a name or a module prefix such as ``"delta_proj"``) get no weight decay, e.g. the
        bilinear factors of :class:`~timm_introspect.nets.lowrank.FactorizedMLP`, which L2 would shrink towards
        zero together. Unlike timm's optimizer factory, 1-D parameters are not exempted by default (the
        paper decays all of H)."""
        skip = tuple(getattr(model, "no_weight_decay", lambda: ())())
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                exempt = any(name == s or name.startswith(s + ".") for s in skip) or (not self.decay_1d and p.ndim <= 1)
                (no_decay if exempt else decay).append(p)
        groups = [{"params": decay}] + ([{"params": no_decay, "weight_decay": 0.0}] if no_decay else [])
        return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                               nesterov=self.nesterov)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _acquire(path: Path) -> int:
    """Open and ``flock`` the lock file ``path``; the file locked must still be the one at ``path`` (a run ending
    removes it, and one that opened it just before must not hold a lock no later run can see)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise RunLockedError(
                f"another run is writing to {path.parent} (it holds {path}): wait for it to finish, or use another "
                "output folder") from err
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by the run that held it as this one locked it: lock the file there now


@contextlib.contextmanager
def exclusive_run(out_dir: str | Path) -> Iterator[None]:
    """Hold ``<out_dir>/.lock`` for the duration: a second run writing to the same folder is refused.

    The lock is an OS file lock (``flock``): the kernel releases it when the process ends, so a killed
    run never leaves it stuck. The file exists only while a run holds it: it is removed when the run ends,
    finished or refused, so a refused run leaves an existing folder as it was. Under ``accelerate launch`` one
    process per machine holds it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # torchrun / accelerate launch: one process per machine locks
        yield
        return
    path = out_dir / ".lock"
    fd = _acquire(path)
    try:
        yield
    finally:
        try:
            os.unlink(path)  # while still locked: a run that opened it meanwhile sees it gone and retries
        except FileNotFoundError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def make_accelerator(out_dir: str | Path, seed: int = 0, mixed_precision: str = "no") -> Accelerator:
    """An Accelerator with a seedable sampler (data order = f(seed, epoch)) and its project dir."""
    set_seed(seed)
    return Accelerator(
        mixed_precision=mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(out_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),
    )


def _latest_checkpoint(checkpoint_dir: Path) -> tuple[int, Path | None]:
    done = sorted(p for p in checkpoint_dir.glob("epoch-*") if (p / "done.json").is_file())
    if not done:
        return 0, None
    return json.loads((done[-1] / "done.json").read_text())["epoch"], done[-1]


def _sums(folder: Path) -> dict[str, str]:
    """sha256 of every file of a checkpoint (recorded in done.json, checked before resuming)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "done.json"}


def _verify_checkpoint(folder: Path) -> None:
    expected = json.loads((folder / "done.json").read_text()).get("files")
    if expected is None:  # written before sums were recorded
        return
    found = _sums(folder)
    bad = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    if bad:
        raise CheckpointError(
            f"checkpoint {folder} is damaged ({', '.join(bad)} missing, truncated or changed since it was written): "
            f"resuming from it would not give the uninterrupted result. Delete {folder} to resume from the "
            "checkpoint before it, or its parent folder to start over")


def train_loop(
    accelerator: Accelerator,
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    schedule: Schedule,
    checkpoint_dir: str | Path | None,
    desc: str = "train",
    on_step: Callable[[int, int], None] | None = None,
    keep_checkpoints: int = 2,
    signature: dict[str, Any] | None = None,
) -> nn.Module:
    """Train ``model`` for ``schedule.epochs`` epochs, resuming from ``checkpoint_dir`` if it holds one.

    Args:
        accelerator: from :func:`make_accelerator`.
        model, loader: not yet prepared; this function prepares them.
        loss_fn: ``loss_fn(model, batch) -> scalar loss``.
        schedule: the optimizer and lr schedule.
        checkpoint_dir: where epoch checkpoints go (``None``: no checkpoints, no resume).
        on_step: called after every optimizer step with ``(epoch, step)``.
        keep_checkpoints: how many of the latest checkpoints to keep.
        signature: JSON-able settings that must match for a resume (data, model, loss, ...); a
            checkpoint from a run with other settings is refused, never silently continued.

    Returns:
        The trained model, unwrapped.
    """
    optimizer = schedule.optimizer(model)
    # counted before prepare(): with N processes accelerate steps the scheduler N times per optimizer
    # step, so the schedule advances by the batches of all processes (len(loader) per epoch)
    steps_per_epoch = len(loader)
    # in optimizer steps: N processes with batches of B follow the schedule of one process with batches of N B
    procs = accelerator.num_processes
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: schedule.lr_factor(s // procs, math.ceil(steps_per_epoch / procs)))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    start_epoch = 0
    run = {"schedule": asdict(schedule), "batches_per_epoch": steps_per_epoch,
           "processes": accelerator.num_processes, **(signature or {})}
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        start_epoch, latest = _latest_checkpoint(checkpoint_dir)
        if latest is not None:
            saved = json.loads((latest / "done.json").read_text()).get("run")
            if saved != json.loads(json.dumps(run)):
                raise CheckpointError(
                    f"{latest} was written by a run with other settings ({saved}); this run: {run}. "
                    f"Use a new output folder, or delete {checkpoint_dir} to start over"
                )
            _verify_checkpoint(latest)
            try:
                accelerator.load_state(str(latest))
            except Exception as err:  # a damaged file that still passed the sums (an older checkpoint)
                raise CheckpointError(
                    f"cannot resume from {latest} ({type(err).__name__}: {err}): the checkpoint is damaged. Delete "
                    f"{latest} to resume from the one before it, or {checkpoint_dir} to start over") from err
            log.info("%s: resumed from %s (epoch %d/%d)", desc, latest, start_epoch, schedule.epochs)

    for epoch in range(start_epoch, schedule.epochs):
        loader.set_epoch(epoch)
        model.train()
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{schedule.epochs}", leave=False,
                   disable=not accelerator.is_local_main_process)
        for step, batch in enumerate(bar):
            loss = loss_fn(model, batch)
            value = loss.item()
            if not math.isfinite(value):  # before the step: the weights, and the last checkpoint, stay finite
                raise DivergedError(
                    f"{desc}: the loss is {value} at epoch {epoch + 1}, step {step + 1}: training diverged (a learning "
                    "rate too high, or non-finite inputs). Nothing of this epoch was saved; lower the learning rate "
                    "or check the data, then run again (it resumes from the last finished epoch)")
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{value:.3f}", lr=f"{scheduler.get_last_lr()[0]:.4f}")
            if on_step is not None:
                on_step(epoch, step)
        if checkpoint_dir is not None:
            path = checkpoint_dir / f"epoch-{epoch + 1:04d}"
            accelerator.save_state(str(path))
            accelerator.wait_for_everyone()  # every rank's files are written before the checkpoint counts
            if accelerator.is_local_main_process:
                give_default_mode(path)  # accelerate writes its files 0600: readable like every other file
            if accelerator.is_main_process:
                (path / "done.json").write_text(json.dumps({"epoch": epoch + 1, "run": run, "files": _sums(path)}))
                for old in sorted(checkpoint_dir.glob("epoch-*"))[:-keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
            accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model)
