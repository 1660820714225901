"""Reading saved files strictly: safetensors, JSON configs, state dicts. All or nothing, with errors that say
what to do (:class:`~timm_introspect.CheckpointError`).

* :func:`load_tensors`: a safetensors file (never pickle); damage is refused.
* :func:`read_json` / :func:`read_timm_config`: regular files of bounded size holding a JSON object; timm's
  ``config.json`` may only pass an allow-list of model arguments (no ``checkpoint_path``, no file-loading
  ``pretrained_cfg`` keys), since its contents go to ``timm.create_model``.
* :func:`load_strict`: names, shapes, dtypes, finiteness (and the sign of the [-1, 1] scales) checked before
  anything is copied.
* :func:`hub_download`: one file of a model on the Hub, every failure as a :class:`CheckpointError` that says what
  it means (a model id that is also no local folder says that the folder does not exist, not only "offline?").

And writing them: :func:`staged_folder` writes a model's files beside its folder and moves them in, each with
``os.replace``, only once all are written (a failed save changes nothing; other files of the folder are kept);
every file gets the mode a new file gets (``0o666`` less the umask, like ``open()``), whatever the writer used
(``safetensors`` creates its files ``0600``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import timm
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
from timm.models import PretrainedCfg
from torch import nn

from ..errors import CheckpointError, IntrospectionError

__all__ = ["ALLOWED_MODEL_ARGS", "TIMM_CONFIG", "TIMM_WEIGHTS", "check_finite", "check_readable", "default_file_mode",
           "give_default_mode", "hub_download", "load_strict", "load_tensors", "missing_folder", "read_json",
           "read_timm_config", "staged_folder"]

TIMM_CONFIG = "config.json"
TIMM_WEIGHTS = "model.safetensors"

log = logging.getLogger(__name__)


def check_readable(path: str | Path, name: str) -> None:
    """Raise :class:`CheckpointError` saying "permission denied" (not "corrupt") for a file this user cannot read."""
    try:
        with open(path, "rb"):
            pass
    except PermissionError as err:
        raise CheckpointError(
            f"{name} cannot be read: permission denied ({path}); the file is fine but not readable by this user: "
            "ask its owner to make it readable (chmod a+r), or copy the model with the owner's rights") from err


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a truncated or corrupted file raises :class:`CheckpointError`."""
    check_readable(path, Path(path).name)
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{Path(path).name} is not a valid safetensors file ({err}); it may be truncated or corrupted: "
            "download it again (force_download=True) or save the model again"
        ) from err


#: model arguments a saved config.json may pass to timm.create_model: hyperparameters of the architecture,
#: never arguments that make timm read files (``checkpoint_path``, ``pretrained_cfg`` with ``file``, ...)
ALLOWED_MODEL_ARGS = frozenset({
    "num_classes", "in_chans", "global_pool", "img_size", "patch_size", "drop_rate", "drop_path_rate",
    "class_token", "no_embed_class", "reg_tokens", "dynamic_img_size", "dynamic_img_pad", "output_stride",
})
MAX_CONFIG_BYTES = 4 << 20


def read_json(path: str | Path, name: str) -> dict[str, Any]:
    """A JSON object from a regular file of reasonable size; anything else raises :class:`CheckpointError`."""
    path = Path(path)
    try:
        if not path.is_file():  # a FIFO or a device would block or never end
            raise CheckpointError(f"{name} is not a regular file ({path}); save the model again")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{name} is {path.stat().st_size} bytes, far more than a config; "
                                  "save the model again")
        check_readable(path, name)
        data = json.loads(path.read_bytes().decode("utf-8"))
    except CheckpointError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"cannot read {name} ({type(err).__name__}: {err}); save the model again") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{name} holds {type(data).__name__}, not an object; save the model again")
    return data


def read_timm_config(path: str | Path) -> dict[str, Any]:
    """timm's ``config.json``, checked for what rebuilding f needs (an allow-list of model arguments)."""
    cfg = read_json(path, TIMM_CONFIG)
    num_classes = cfg.get("num_classes")
    if not isinstance(cfg.get("architecture"), str) or type(num_classes) is not int:
        raise CheckpointError(f"{TIMM_CONFIG} lacks 'architecture' or 'num_classes': it is not a timm model config")
    if num_classes < 1:
        raise CheckpointError(f"{TIMM_CONFIG} has num_classes {num_classes}: an introspective model needs a classifier")
    if cfg["architecture"] not in timm.list_models():
        raise CheckpointError(
            f"{TIMM_CONFIG} names architecture {cfg['architecture']!r}, which timm {timm.__version__} does not have: "
            "upgrade timm (or import the package that registers it)"
        )
    model_args = cfg.get("model_args", {})
    pretrained_cfg = cfg.get("pretrained_cfg", {})
    if not isinstance(model_args, dict) or not isinstance(pretrained_cfg, dict):
        raise CheckpointError(f"{TIMM_CONFIG}: model_args and pretrained_cfg must be objects; save the model again")
    refused = sorted(set(model_args) - ALLOWED_MODEL_ARGS)
    if refused:
        raise CheckpointError(
            f"{TIMM_CONFIG} passes {refused} to timm.create_model; only {sorted(ALLOWED_MODEL_ARGS)} are accepted "
            "from a saved file (others could make timm read arbitrary files). Build the model yourself and wrap it")
    known = set(PretrainedCfg.__dataclass_fields__) - {"file", "url", "hf_hub_id", "hf_hub_filename", "state_dict",
                                                        "source"}
    if set(pretrained_cfg) - known:
        raise CheckpointError(f"{TIMM_CONFIG} has unknown or file-loading pretrained_cfg keys "
                              f"{sorted(set(pretrained_cfg) - known)}; save the model again")
    return cfg


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str, skip_prefix: str | None = None) -> None:
    """``module.load_state_dict(state)`` after checking every name and shape: all or nothing.

    Entries of ``module`` under ``skip_prefix`` are neither expected nor loaded.
    """
    expected = {k: v for k, v in module.state_dict().items() if not (skip_prefix and k.startswith(skip_prefix))}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    dtypes = sorted(k for k in set(expected) & set(state) if expected[k].dtype != state[k].dtype)
    if missing or unexpected or wrong or dtypes:
        details = []
        if dtypes:
            k = dtypes[0]
            details.append(f"{len(dtypes)} of another dtype, e.g. {k}: file {state[k].dtype} "
                           f"vs model {expected[k].dtype}")
        if missing:
            details.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            k = wrong[0]
            details.append(
                f"{len(wrong)} with other shapes, e.g. {k}: file {tuple(state[k].shape)} "
                f"vs model {tuple(expected[k].shape)}"
            )
        raise CheckpointError(
            f"{what} does not match the model its config describes ({'; '.join(details)}); nothing was loaded. "
            "The files come from different models or versions: save the model again"
        )
    check_finite(state, what)
    # max-abs scales, counts and sums of squares are never negative (a standardization's plain sums may be)
    negative = [k for k, v in state.items() if k.startswith("scaler.") and not k.endswith(".sum")
                and v.is_floating_point() and bool((v < 0).any())]
    if negative:
        raise CheckpointError(f"{what} has negative feature scales or counts ({negative[:3]}): the file is damaged; "
                              "nothing was loaded. Save the model again")
    module.load_state_dict(state, strict=skip_prefix is None)


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse to save (or load) weights with NaN or inf: they would load and give garbage."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{what} has non-finite values in {bad[:5]}{' ...' if len(bad) > 5 else ''}: training "
                              "diverged or the weights are damaged; nothing was written. Train again with a lower "
                              "learning rate")


def missing_folder(path: str | Path) -> str:
    """How the package says that a local folder is missing: ``the folder 'x' does not exist (/abs/x)``."""
    return f"the folder {str(path)!r} does not exist ({Path(path).expanduser().absolute()})"


def hub_download(repo_id: str, filename: str, *, folder_meant: bool = True, **kwargs: Any) -> Path | None:
    """``hf_hub_download(repo_id, filename, **kwargs)``: the file's local path, or ``None`` when the repo exists
    without it; any other failure raises :class:`CheckpointError` saying what it means.

    ``folder_meant``: ``repo_id`` could also have meant a local folder (it was not written ``hf-hub:<repo>``); it is
    only looked up on the Hub because no such folder exists, and the messages say that first. An id the Hub cannot
    take (``./x``, ``/x/y``) is a missing folder either way.
    """
    folder = f"{missing_folder(repo_id)}, and " if folder_meant else ""
    try:
        return Path(hf_hub_download(repo_id, filename, **kwargs))
    except HFValidationError as err:
        raise CheckpointError(f"{repo_id!r} is neither an existing folder nor a valid Hub repo id (owner/name): "
                              f"{missing_folder(repo_id)}; check the path") from err
    except LocalEntryNotFoundError as err:  # (a subclass of EntryNotFoundError: first)
        raise CheckpointError(f"{folder}{filename} of the Hub repo {repo_id!r} is not in the local cache and the Hub "
                              "cannot be reached (offline?): " + ("check the path, or " if folder_meant else "")
                              + "download it once while online, or pass a local folder") from err
    except EntryNotFoundError:
        return None
    except RepositoryNotFoundError as err:
        if folder_meant:
            raise CheckpointError(f"{repo_id!r} is neither a local folder nor a Hub repository you can access "
                                  f"({missing_folder(repo_id)}): check the path or the name (and your token for a "
                                  "private repo)") from err
        raise CheckpointError(f"{repo_id!r} is not a Hub repository you can access: check the name (and your token "
                              "for a private repo)") from err


def _umask() -> int:
    """This process's umask, read without changing it (Linux), else by setting it back at once."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask (readable like the JSON files)."""
    return 0o666 & ~_umask()


def give_default_mode(path: str | Path) -> None:
    """Give the file ``path``, or every file under the folder ``path``, the mode a new file gets
    (:func:`default_file_mode`): for what a library writes ``0600`` (``safetensors``, accelerate's checkpoints),
    so that a model or a run copied to a shared place is readable as its JSON files are."""
    path = Path(path)
    mode = default_file_mode()
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file() and not file.is_symlink():
            os.chmod(file, mode)


@contextlib.contextmanager
def staged_folder(target: str | Path, what: str = "the model") -> Iterator[Path]:
    """``with staged_folder(out) as tmp:`` write a model's files into ``tmp``; they replace those of ``out`` only
    when the block succeeds.

    ``tmp`` is a fresh folder beside ``out`` (same file system). On success every file written there gets the
    default file mode and is moved into ``out`` with ``os.replace`` (atomic per file), after all of them were
    written: ``out`` never holds a half-written file, and files of ``out`` that are not the model's (a training
    run's ``checkpoints/``, a feature cache, a lock) are kept. On failure ``out`` is left as it was and the error
    is raised (a :class:`CheckpointError` for anything but the package's own errors).
    """
    target = Path(target)
    if target.is_symlink() or target.exists() and not target.is_dir():
        raise CheckpointError(f"cannot save {what} to {target}: it exists and is not a folder; pass a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".saving", dir=target.parent))
    except OSError as err:
        raise CheckpointError(f"cannot save {what} beside {target} ({type(err).__name__}: {err}); "
                              "nothing was changed") from err
    try:
        try:
            yield tmp
        except IntrospectionError:
            raise
        except Exception as err:
            raise CheckpointError(f"saving {what} to {target} failed ({type(err).__name__}: {err}); nothing was "
                                  "changed there") from err
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        try:
            give_default_mode(tmp)
            target.mkdir(exist_ok=True)
            for path in files:
                dest = target / path.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
        except OSError as err:
            raise CheckpointError(f"moving the saved files of {what} into {target} failed ({type(err).__name__}: "
                                  f"{err})") from err
        log.debug("saved %s to %s (%d files)", what, target, len(files))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
