"""CIFAR-10-C in the release's layout: writing it, and reading it from a folder, the tar, rows or the Hub.

The release is ``<corruption>.npy`` of shape ``(5 n, 32, 32, 3)`` uint8 (severity 1 first, blocks of ``n``)
next to ``labels.npy`` (``5 n`` labels), in one tar on Zenodo (record 2535967) and mirrored on the Hub.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...errors import DataError, InvalidArgumentError
from ..outputs import atomic_open, write_json
from .corruptions import CORRUPTIONS, corrupt

__all__ = ["GENERATOR_VERSION", "RELEASE_TAR", "hub_files", "load_cifar10c", "load_official", "row_columns",
           "write_official"]

#: Bumped whenever a corruption's output changes, so that files made by an older generator are made again.
GENERATOR_VERSION = 2


def write_official(out_dir: str | Path, images: np.ndarray, labels: np.ndarray,
                   corruptions: tuple[str, ...] = CORRUPTIONS, seed: int = 0,
                   frost_dir: str | Path | None = None, chunk: int = 2500,
                   progress: bool = True) -> dict[str, dict]:
    """Write ``<corruption>.npy`` (5 severity blocks of ``len(images)``) and ``labels.npy``, as the release.

    Each corruption has its own generator, seeded by ``(seed, its index in CORRUPTIONS)``, so a file does
    not depend on which others are made; images are corrupted ``chunk`` at a time (bounded memory). Files
    are written whole (a temporary name, then renamed) and listed with their md5 in ``manifest.json``. Run
    again with the same images, labels, seed, chunk, frost folder and :data:`GENERATOR_VERSION`, a finished
    file is kept (an interrupted run resumes); with other settings the earlier files are deleted. A folder
    holding ``.npy`` files this generator did not write is refused.
    Returns ``{"md5": {file: sum}, "seconds": {corruption: generation time}, "reused": [corruption, ...]}``.
    """
    import json

    from ...log import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise InvalidArgumentError(f"unknown corruption(s) {', '.join(unknown)}; choose from {', '.join(CORRUPTIONS)}")
    images = np.ascontiguousarray(images)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise InvalidArgumentError(f"{len(labels)} labels of shape {labels.shape} for {len(images)} images: pass one "
                                   "label per image")
    if len(labels) and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 255):
        raise InvalidArgumentError("labels must be integers in [0, 255] (they are stored as uint8, as the release's); "
                                   f"got {labels.dtype} in [{labels.min()}, {labels.max()}]")
    settings = {"generator": GENERATOR_VERSION, "seed": seed, "chunk": chunk,
                "frost_dir": str(Path(frost_dir).resolve()) if frost_dir is not None else None,
                "images_md5": hashlib.md5(images.tobytes()).hexdigest(),
                "labels_md5": hashlib.md5(np.asarray(labels, dtype=np.uint8).tobytes()).hexdigest()}
    manifest_path = out_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        manifest = {}
    manifest = manifest if isinstance(manifest, dict) else {}
    files = manifest.get("files")
    # only the files this generator writes, by their known names, inside out_dir: a crafted manifest naming
    # "../x" or "/abs/path" is never followed
    known = {f"{c}.npy" for c in CORRUPTIONS}
    ours = {name for name in files if name in known} if isinstance(files, dict) else set()
    foreign = sorted(p.name for p in out_dir.glob("*.npy") if p.name != "labels.npy" and p.name not in ours)
    if foreign:
        raise DataError(f"{out_dir} holds {', '.join(foreign)}, not written by this generator: choose an empty "
                         "folder (the set would mix them with labels of other images)")
    done = {k: files[k] for k in ours} if manifest.get("settings") == settings else {}
    for stale in ours - set(done):  # made from other images or settings: never left beside the new ones
        (out_dir / stale).unlink(missing_ok=True)
    manifest = {"settings": settings, "files": {k: v for k, v in done.items() if (out_dir / k).is_file()}}
    with atomic_open(out_dir / "labels.npy") as fh:  # never through a link planted in out_dir
        np.save(fh, np.tile(np.asarray(labels, dtype=np.uint8), 5))
    seconds, reused = {}, []
    bar = tqdm(total=len(corruptions) * 5 * len(images), unit="img", desc="CIFAR-10-C", disable=not progress)
    for name in corruptions:
        path = out_dir / f"{name}.npy"
        if path.name in done and path.is_file() and _file_md5(path) == done[path.name]:
            reused.append(name)
            bar.update(5 * len(images))
            continue
        start = time.perf_counter()
        rng = np.random.default_rng([seed, CORRUPTIONS.index(name)])
        out = np.empty((5 * len(images), *images.shape[1:]), dtype=np.uint8)
        for s in range(1, 6):
            for i in range(0, len(images), chunk):
                part = images[i : i + chunk]
                out[(s - 1) * len(images) + i : (s - 1) * len(images) + i + len(part)] = corrupt(
                    part, name, s, rng, frost_dir=frost_dir)
                bar.set_postfix_str(f"{name} {s}")
                bar.update(len(part))
        seconds[name] = time.perf_counter() - start
        with atomic_open(path) as fh:  # an interrupted run never leaves a truncated file; links are not followed
            np.save(fh, out)
        manifest["files"][path.name] = _file_md5(path)
        write_json(manifest_path, manifest)
    bar.close()
    write_json(manifest_path, manifest)
    sums = {**manifest["files"], "labels.npy": _file_md5(out_dir / "labels.npy")}  # hashed once, when written
    return {"md5": dict(sorted(sums.items())), "seconds": seconds, "reused": reused}


#: The release on Zenodo (record 2535967): one tar of ``CIFAR-10-C/<corruption>.npy`` and ``labels.npy``.
RELEASE_TAR = {"name": "CIFAR-10-C.tar", "bytes": 2_918_471_680, "md5": "56bf5dcef84df0e2308c6dcbcbbd8499"}


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _unique(entries: list[tuple[str, object]], where: str) -> dict[str, object]:
    """``{file name: item}``; a name found twice (two folders, two tar members) is refused, not shadowed."""
    found: dict[str, object] = {}
    for name, item in entries:
        if name in found:
            raise DataError(f"{where} holds {name} twice ({found[name]} and {item}): which one is meant is ambiguous; "
                            "keep one copy")
        found[name] = item
    return found


def _assemble(names: set[str], read: Callable[[str], bytes], where: str, corruptions: tuple[str, ...] | None,
              md5: dict[str, str] | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read ``labels.npy`` and the wanted ``<corruption>.npy`` (only those), checking sums and layout."""
    if "labels.npy" not in names:
        raise DataError(f"{where} has no labels.npy: not CIFAR-10-C in the release's layout")
    wanted = tuple(corruptions) if corruptions else tuple(sorted(n[:-4] for n in names if n != "labels.npy"))
    missing = [c for c in wanted if f"{c}.npy" not in names]
    if missing:
        raise DataError(f"{where} lacks {', '.join(f'{c}.npy' for c in missing)}")

    def load(name: str) -> np.ndarray:
        raw = read(name)
        expected = (md5 or {}).get(name)
        if expected is not None and (found := hashlib.md5(raw).hexdigest()) != expected:
            raise DataError(f"{name} in {where} has md5 {found}, expected {expected}: "
                             "the file is corrupted or from another release; download it again")
        try:
            return np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as err:
            raise DataError(f"{name} in {where} is not a readable .npy file ({err}); download it again") from err

    labels = load("labels.npy")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"labels.npy in {where} holds {labels.dtype} {labels.shape}"
                        f"{f' in [{labels.min()}, {labels.max()}]' if labels.size else ''}: the release's are the "
                        "CIFAR-10 classes 0-9, one per image; the file is damaged or from another dataset")
    data = {}
    for c in wanted:
        arr = load(f"{c}.npy")
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) != len(labels) or len(arr) % 5:
            raise DataError(f"{c}.npy in {where} has {arr.dtype} {arr.shape}; the layout is uint8 (5 n, H, W, 3) "
                             f"with 5 n = len(labels.npy) = {len(labels)}")
        data[c] = arr
    return data, labels


def load_official(source: str | Path, corruptions: tuple[str, ...] | None = None,
                  md5: dict[str, str] | str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({corruption: (5n, 32, 32, 3) uint8}, labels (5n,))`` from a folder of ``.npy`` or the release tar.

    Only the requested corruptions are read (all present by default). ``md5`` maps file names to expected
    md5 sums, or is the md5 of a tar; the release tar (recognized by its size) is checked against
    :data:`RELEASE_TAR` by default. A mismatch raises :class:`~timm_introspect.DataError`.
    """
    source = Path(source)
    if source.is_dir():
        found = [p for p in sorted(source.rglob("*.npy")) if not p.name.startswith("._")]
        odd = [p for p in found if not p.is_file()]  # a FIFO, a device, a link to /dev/zero
        if odd:
            raise DataError(f"{odd[0]} is not a regular file: refusing to read it; replace it with the real file")
        paths = _unique([(p.name, p) for p in found], str(source))
        return _assemble(set(paths), lambda n: paths[n].read_bytes(), str(source), corruptions,
                         md5 if isinstance(md5, dict) else None)
    if not source.is_file() or not tarfile.is_tarfile(source):
        raise DataError(f"{source} is neither a folder of .npy files nor a tar archive of CIFAR-10-C")
    release_size = source.stat().st_size == RELEASE_TAR["bytes"]
    expected = md5 if isinstance(md5, str) else (RELEASE_TAR["md5"] if release_size else None)
    if expected is not None and (found := _file_md5(source)) != expected:
        raise DataError(f"{source} has md5 {found}, expected {expected}: the archive is corrupted or "
                         "incomplete; download it again")
    with tarfile.open(source) as tar:
        members = _unique([(Path(m.name).name, m) for m in tar.getmembers()
                           if m.isfile() and m.name.endswith(".npy") and not Path(m.name).name.startswith("._")],
                          str(source))
        return _assemble(set(members), lambda n: tar.extractfile(members[n]).read(), str(source), corruptions,
                         md5 if isinstance(md5, dict) else None)


def row_columns(ds, where: str, what: str) -> tuple[str, str, str, str, str | None]:
    """The names of the image, label, corruption, severity and (optional) index columns of rows ``ds``."""
    cols = set(ds.column_names)
    pick = lambda *options: next((c for c in options if c in cols), None)  # noqa: E731
    image, label = pick("image", "img"), pick("label", "labels")
    name = pick("corruption_name", "corruption", "corruption_type")
    level = pick("corruption_level", "severity", "level")
    index = pick("index", "idx", "image_id")  # the test image's number, if the rows carry it
    if None in (image, label, name, level):
        raise DataError(f"{where} has columns {sorted(cols)}; {what} rows need an image, a label, the "
                         "corruption's name and its severity (e.g. image, label, corruption_name, corruption_level)")
    return image, label, name, level, index


def _from_rows(ds, corruptions: tuple[str, ...] | None, where: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows ``(image, label, corruption, severity[, index])`` (a ``datasets.Dataset``) -> the release's arrays.

    Within a severity, images keep their row order, or follow an ``index`` column when there is one.
    """
    image, label, name, level, index = row_columns(ds, where, "CIFAR-10-C")
    names = np.asarray(ds[name])
    levels = np.asarray(ds[level]).astype(int)
    wanted = tuple(corruptions) if corruptions else tuple(sorted(set(names.tolist())))
    data, labels = {}, None
    all_labels = np.asarray(ds[label])
    for c in wanted:
        rows = np.flatnonzero(names == c)
        if not len(rows):
            raise DataError(f"{where} has no rows of {c!r}; it has {', '.join(sorted(set(names.tolist())))}")
        order = np.asarray(ds[index])[rows] if index else np.arange(len(rows))
        rows = rows[np.lexsort((order, levels[rows]))]  # severity blocks; by image number (else row order) within
        per_level = np.bincount(levels[rows], minlength=6)
        if per_level[0] or len(per_level) != 6 or len(set(per_level[1:].tolist())) != 1:
            raise DataError(f"{where}: {c!r} has {per_level[1:].tolist()} rows at severities 1-5 (and "
                             f"{int(per_level[0])} at others); the layout needs the same images at each of 1-5")
        subset = ds.select(rows.tolist())
        data[c] = np.stack([np.asarray(im.convert("RGB")) for im in subset[image]])
        if labels is None:
            labels = all_labels[rows].astype(np.uint8)
        elif not np.array_equal(all_labels[rows], labels):
            raise DataError(f"{where}: the rows of {c!r} are not in the same image order as those of {wanted[0]!r} "
                             "(shuffled rows need an index column with each test image's number)")
    return data, labels


def hub_files(repo: str, revision: str | None) -> list[str]:
    """The files of a dataset repo on the Hub. A repo or revision that does not exist raises :class:`DataError`;
    anything else (offline, no network) propagates, for the caller to fall back on the cache."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return HfApi().list_repo_files(repo, repo_type="dataset", revision=revision)
    except RevisionNotFoundError as err:
        raise DataError(f"the dataset repo {repo} has no revision {revision!r}") from err
    except RepositoryNotFoundError as err:
        raise DataError(f"{repo} is neither a local path nor a dataset repo on the Hub") from err


def load_cifar10c(source: str | Path, corruptions: tuple[str, ...] | None = None,
                  md5: dict[str, str] | str | None = None, *, revision: str | None = None, split: str = "test",
                  cache_dir: str | Path | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """CIFAR-10-C from wherever it is, as ``({corruption: (5n, 32, 32, 3) uint8}, labels (5n,))``.

    ``source`` is one of: a folder of ``.npy`` files or the release tar (:func:`load_official`); a folder of
    rows that ``datasets`` reads (Parquet, ...) with image, label, corruption name and severity columns; or
    a dataset repo on the Hub holding either (a mirror of the release such as ``YashP54/cifar10-c``, whose
    ``.npy`` files are downloaded through ``huggingface_hub``'s cache, only those asked for).
    """
    path = Path(source)
    if path.exists():
        if path.is_dir() and not any(path.rglob("*.npy")):
            import datasets

            rows = datasets.load_dataset(str(path), split=split, cache_dir=cache_dir)
            return _from_rows(rows, corruptions, str(path))
        return load_official(path, corruptions, md5)
    from huggingface_hub import hf_hub_download, snapshot_download

    repo = str(source)
    wanted = (set(f"{c}.npy" for c in corruptions) | {"labels.npy"}) if corruptions else None
    try:
        files = hub_files(repo, revision)
    except DataError:
        raise
    except Exception as err:  # offline mode, no network, a server error: the .npy files already cached
        patterns = sorted(f"*{n}" for n in wanted) if wanted else ["*.npy"]
        unreachable = (f"cannot reach the Hub for {repo} and {{what}} not in the cache ({type(err).__name__}); "
                       "connect, or pass a local folder or tar")
        try:
            folder = Path(snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=patterns,
                                            cache_dir=cache_dir, local_files_only=True))
        except Exception:
            raise DataError(unreachable.format(what="it is")) from err
        cached = {p.name for p in folder.rglob("*.npy")}
        missing = sorted(n for n in (wanted or {"labels.npy"}) if n not in cached)
        if missing:
            raise DataError(unreachable.format(what=", ".join(missing) + " are")) from err
        return load_official(folder, corruptions, md5)
    npy = [f for f in files if f.endswith(".npy") and (wanted is None or Path(f).name in wanted)]
    if npy:
        _unique([(Path(f).name, f) for f in npy], repo)
        local = {Path(f).name: Path(hf_hub_download(repo, f, repo_type="dataset", revision=revision,
                                                     cache_dir=cache_dir)) for f in npy}
        return _assemble(set(local), lambda n: local[n].read_bytes(), repo, corruptions,
                         md5 if isinstance(md5, dict) else None)
    tars = [f for f in files if f.endswith((".tar", ".tar.gz", ".tgz"))]
    if tars:
        archive = hf_hub_download(repo, tars[0], repo_type="dataset", revision=revision, cache_dir=cache_dir)
        return load_official(archive, corruptions, md5)
    import datasets

    ds = datasets.load_dataset(repo, revision=revision, split=split, cache_dir=cache_dir)
    return _from_rows(ds, corruptions, repo)
