"""A safetensors file written row block by row block (:class:`StreamingFile`) and read back memory-mapped
(:func:`open_mapped`): what the feature cache (:mod:`timm_introspect.training.cache`) stores its entries in, so
memory stays bounded at any dataset size.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import safetensors
import torch

from ..errors import CheckpointError
from ..io.checkpoint import check_readable

__all__ = ["StreamingFile", "open_mapped"]

_DTYPES = {torch.float32: ("F32", np.float32), torch.int64: ("I64", np.int64)}
_NUMPY = {code: np_dtype for code, np_dtype in _DTYPES.values()}


class StreamingFile:
    """A safetensors file whose header is written first and whose tensors are filled row block by row block.

    The layout is the format's own (8-byte header length, JSON header, the tensors back to back), so any
    safetensors reader opens the finished file; rows not yet written read as zeros (the file is sparse).
    """

    def __init__(self, path: Path, shapes: dict[str, tuple[torch.dtype, tuple[int, ...]]], create: bool) -> None:
        header, offset = {}, 0
        for name, (dtype, shape) in shapes.items():
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": _DTYPES[dtype][0], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
        self.start = 8 + len(raw)
        self.offsets = {name: entry["data_offsets"][0] for name, entry in header.items()}
        self.row_bytes = {name: (entry["data_offsets"][1] - entry["data_offsets"][0]) // max(entry["shape"][0], 1)
                          for name, entry in header.items()}
        if create:
            with open(path, "wb") as fh:
                fh.write(struct.pack("<Q", len(raw)) + raw)
                fh.truncate(self.start + offset)
        elif path.stat().st_size != self.start + offset:
            raise CheckpointError(f"{path} has {path.stat().st_size} bytes, the layout {self.start + offset}")
        self.fh = open(path, "r+b")  # noqa: SIM115 (closed in close())

    def write(self, name: str, row: int, tensor: torch.Tensor) -> None:
        self.fh.seek(self.start + self.offsets[name] + row * self.row_bytes[name])
        self.fh.write(tensor.contiguous().numpy().tobytes())

    def sync(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.sync()
        self.fh.close()


def open_mapped(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, memory-mapped (copy-on-write: the file is never changed).

    The header is checked by ``safetensors`` itself (a truncated or corrupted file raises
    :class:`~timm_introspect.CheckpointError`); the data is read from disk only where it is touched.
    """
    path = Path(path)
    check_readable(path, path.name)  # "permission denied", not "corrupted"
    try:
        with safetensors.safe_open(str(path), framework="pt") as fh:  # validates the header and the sizes
            names = list(fh.keys())
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
    except (safetensors.SafetensorError, OSError, ValueError, struct.error) as err:
        raise CheckpointError(f"{path.name} is not a valid safetensors file ({err}); it may be truncated or "
                              "corrupted") from err
    out = {}
    for name in names:
        entry = header[name]
        if entry["dtype"] not in _NUMPY:
            raise CheckpointError(f"{path.name}: {name} is {entry['dtype']}, the cache holds only F32 and I64")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if end == begin:
            out[name] = torch.zeros(shape, dtype=next(t for t, (c, _) in _DTYPES.items() if c == entry["dtype"]))
            continue
        array = np.memmap(path, dtype=_NUMPY[entry["dtype"]], mode="c", offset=8 + length + begin, shape=shape)
        out[name] = torch.from_numpy(array)
    return out
