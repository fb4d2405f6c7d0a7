"""Small file helpers shared by every writer in the engine.

Why this module exists:

* **Atomic writes.** Animation caches, checkpoints and meshes are read by other programs
  (Blender's Mesh Cache modifier, the add-on, training jobs). A half-written file that
  *looks* valid is worse than no file, so every writer goes through :func:`atomic_path`
  / :func:`atomic_write`: the data lands in a temporary file in the destination folder and
  is moved into place with :func:`os.replace` (atomic on POSIX and Windows) only once it
  is complete. On any exception the temporary file is removed and the old file, if any,
  is left untouched.
* **Never unpickle untrusted data.** FaceFormer-format corpora ship ``templates.pkl``;
  :func:`safe_load_pickle` reads it with an unpickler that can only rebuild plain
  containers and numpy arrays, so a malicious pickle cannot run code.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["UnsafePickleError", "atomic_path", "atomic_write", "safe_load_pickle"]


def _temp_sibling(path: Path) -> Path:
    # Keep the real suffix last: np.save/trimesh pick the format from the extension,
    # and np.save appends ".npy" to names that do not end with it.
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    Use this when a library insists on opening the file itself (``np.save``,
    ``safetensors.save_file``, ``trimesh.export``). The parent directory is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"atomic write to {path} produced no file (nothing was written to {tmp.name})")
        # some writers (safetensors) create 0600 files; give the result the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing and atomically move it onto ``path`` on success.

    ``mode`` must be a write mode (``"wb"`` or ``"w"``). The file is flushed and fsync'ed
    before the rename so a crash right after cannot leave an empty file in place.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode ('w' or 'wb'), got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh
        fh.flush()
        with contextlib.suppress(OSError):
            os.fsync(fh.fileno())


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than plain containers and numpy arrays."""


def _numpy_reconstruct():
    try:  # numpy >= 1.26 / 2.x
        from numpy._core.multiarray import _reconstruct  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - older numpy
        from numpy.core.multiarray import _reconstruct  # type: ignore[attr-defined]
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover
        from numpy.core.multiarray import scalar  # type: ignore[attr-defined]
    return scalar


# (module, name) -> factory returning the object. Both numpy 1.x ("numpy.core") and 2.x
# ("numpy._core") spellings map onto whatever this numpy provides, so pickles written
# by either major version load here.
_ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _numpy_reconstruct
    _ALLOWED[(_mod, "scalar")] = _numpy_scalar
_ALLOWED[("numpy", "ndarray")] = lambda: np.ndarray
_ALLOWED[("numpy", "dtype")] = lambda: np.dtype
_ALLOWED[("collections", "OrderedDict")] = lambda: __import__("collections").OrderedDict


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles store bytes (numpy array buffers) as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r} in a pickle")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = lambda: _latin1_encode


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"refusing to load {module}.{name} from a pickle: Parley only reads plain dicts/lists and "
                "numpy arrays from .pkl files because unpickling arbitrary objects can run code. "
                "Convert the file to .npz (np.savez) if it is yours and trusted."
            )
        return factory()


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load a pickle that may only contain dict/list/tuple/str/number and numpy arrays.

    Used only for FaceFormer's ``templates.pkl``. ``encoding="latin1"`` lets Python-2
    pickles of numpy arrays (the published VOCASET/BIWI templates) load correctly.
    Raises :class:`UnsafePickleError` naming the file if anything else is referenced.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - truncated / not a pickle
        raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
