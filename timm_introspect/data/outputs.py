"""Output places: check an output folder (or file) before any work, and write inside it without following links.

Every command and benchmark script calls :func:`prepare_output` (a folder) or :func:`prepare_output_file` (one
file) on its ``--out`` first: an existing file where a folder goes, a place that cannot be written, or a folder
holding another kind of output (a saved introspective model where f goes, a CIFAR-10-C release where explanations
go) is refused at once, before anything is loaded or trained. The writers then write with :func:`atomic_open` /
:func:`write_text` / :func:`write_json` / :func:`save_figure` (every PNG plot): a temporary file opened with
``O_EXCL | O_NOFOLLOW`` beside the target, renamed over it when complete, so a symbolic link planted at the target's
name is refused, never written through, and an interrupted write never leaves a truncated file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidArgumentError

__all__ = ["OUTPUT_KINDS", "atomic_open", "output_kind", "prepare_output", "prepare_output_file", "save_figure",
           "write_json", "write_text"]

#: what each kind of output folder is, as the messages name it
OUTPUT_KINDS = {
    "introspective": "a saved introspective model (introspection_config.json)",
    "backbone": "a saved backbone f in timm's layout (config.json, model.safetensors)",
    "run": "a main-job run (backbone/, introspective/, metrics.json)",
    "cifar10c": "a CIFAR-10-C release (labels.npy, <corruption>.npy)",
    "imagenetc": "an ImageNet-C release (<corruption>/<severity>/<wnid>/...)",
    "active": "an active-learning run (rounds/)",
    "ood": "an OOD benchmark (results.json, table.md)",
    "explain": "explanation maps (explanations.json)",
    "benchmark": "a benchmark's results",
}

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _json_has(path: Path, key: str) -> bool:
    try:
        data = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else None
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and key in data


def output_kind(folder: str | Path) -> str | None:
    """The kind of output ``folder`` holds (a key of :data:`OUTPUT_KINDS`), or ``None`` (empty, or not one of
    this package's outputs)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    has = lambda name: (folder / name).exists() or (folder / name).is_symlink()  # noqa: E731
    if has("introspection_config.json"):
        return "introspective"
    if has("model.safetensors") or has("training.json") or (has("config.json") and has("checkpoints")):
        return "backbone"
    if (folder / "backbone").is_dir() and (folder / "introspective").is_dir():
        return "run"
    if has("labels.npy"):
        return "cifar10c"
    if _json_has(folder / "manifest.json", "paths"):
        return "imagenetc"
    if (folder / "rounds").is_dir():
        return "active"
    if has("explanations.json"):
        return "explain"
    if has("results.json") and has("table.md"):
        return "ood"
    return None


def _check_writable(folder: Path, what: str) -> None:
    """Create and remove a probe file in ``folder``: the only sure test (permissions, read-only mounts, root)."""
    probe = folder / f".timm-introspect-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InvalidArgumentError(f"out={what} cannot be written ({err.strerror or err}): choose a writable "
                                   "place") from err


def _nearest_existing(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            return parent
    return Path.cwd()


def prepare_output(path: str | Path, kind: str = "benchmark", create: bool = True) -> Path:
    """Check the output folder ``path`` before any work, create it (``create``), and return it absolute.

    Refused (:class:`~timm_introspect.errors.InvalidArgumentError`, worded as ``out=``): an existing file or a
    link to one, a place that cannot be written (checked by writing a probe file), and a folder that holds
    another kind of output than ``kind`` (see :data:`OUTPUT_KINDS`; an earlier output of the same kind is
    accepted, so that a run resumes). A folder of anything else is accepted.
    """
    if kind not in OUTPUT_KINDS:
        raise InvalidArgumentError(f"unknown output kind {kind!r}; one of {', '.join(OUTPUT_KINDS)}")
    if str(path).strip() == "":
        raise InvalidArgumentError("out= is empty: name an output folder")
    folder = Path(path).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(f"out={path} is an existing file, not a folder: choose a folder (it is created)")
    if folder.is_dir():
        found = output_kind(folder)
        if found is not None and found != kind:
            raise InvalidArgumentError(f"out={path} holds {OUTPUT_KINDS[found]}, not {OUTPUT_KINDS[kind]}: choose "
                                       "another folder (nothing was written)")
        _check_writable(folder, str(path))
        return folder
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise InvalidArgumentError(f"out={path} cannot be created: {base} is a file, not a folder")
    _check_writable(base, str(path))
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InvalidArgumentError(f"out={path} cannot be created ({err.strerror or err})") from err
    return folder


def prepare_output_file(path: str | Path) -> Path:
    """Check an output file's place before any work: not a folder, not a link, in a writable folder (created
    when missing). Returns it absolute."""
    if str(path).strip() == "":
        raise InvalidArgumentError("out= is empty: name an output file")
    target = Path(path).expanduser().absolute()
    if target.is_symlink():
        raise InvalidArgumentError(f"out={path} is a symbolic link: refusing to write through it; remove it or "
                                   "choose another name")
    if target.is_dir():
        raise InvalidArgumentError(f"out={path} is a folder: name a file (e.g. {Path(path) / 'metrics.json'})")
    if target.exists() and not target.is_file():
        raise InvalidArgumentError(f"out={path} is not a regular file (a FIFO or a device): choose another name")
    prepare_output(target.parent, "benchmark")
    return target


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` for writing without following links: a new temporary file beside it (``O_EXCL |
    O_NOFOLLOW``, so nothing planted there is followed), renamed over ``path`` when the block ends without an
    error (the rename replaces a directory entry, never a link's target). A link at ``path`` is refused."""
    path = Path(path)
    if path.is_symlink():
        raise InvalidArgumentError(f"{path} is a symbolic link: refusing to write through it (it would overwrite "
                                   "a file outside the output folder); remove the link")
    if path.is_dir():
        raise InvalidArgumentError(f"{path} is a folder where a file is written: remove it or choose another folder")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.unlink()  # a stale or planted entry: a link is removed, not followed
    except FileNotFoundError:
        pass
    except IsADirectoryError as err:
        raise InvalidArgumentError(f"{tmp} is a folder: remove it") from err
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)  # a new file's mode
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_open` (no link followed, never half-written)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """``data`` as JSON through :func:`write_text`."""
    return write_text(path, json.dumps(data, indent=indent) + ("\n" if indent is not None else ""))


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """A matplotlib figure saved to ``path`` through :func:`atomic_open` (no link followed, never half-written; the
    format from the suffix, e.g. PNG); ``kwargs`` go to ``fig.savefig`` (``dpi``, ...). Returns ``path``."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip(".").lower() or "png", **kwargs)
    return path
