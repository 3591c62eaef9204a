"""Load the CIFAR python batches without trusting pickle.

A pickle can call any importable function while it loads (its ``REDUCE`` opcode), so
``pickle.load`` on a downloaded file runs whatever the file says. The Python docs recommend
restricting ``Unpickler.find_class`` ("Restricting Globals",
https://docs.python.org/3/library/pickle.html#restricting-globals); this module admits only the
globals that a pickled numpy array needs, nothing that can touch files, processes or ``eval``.
"""

from __future__ import annotations

import pickle
from typing import IO, Any, Callable

import numpy as np

__all__ = ["restricted_load"]

try:  # numpy >= 2 moved the implementation to numpy._core and keeps numpy.core as a shim.
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` at protocol < 3, limited to that use."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"forbidden call _codecs.encode(..., {encoding!r}) in pickle")
    return text.encode("latin1")


# The objects a CIFAR batch (a dict of lists, bytes and one uint8 ndarray) can refer to, under
# each module path that numpy 1.x (``numpy.core``, the official 2009 files) or 2.x
# (``numpy._core``) writes. Resolved here, not imported by name, so a listed path never imports a
# module (and numpy 2 does not warn about ``numpy.core``).
_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct  # array, protocol <= 4
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = _multiarray.scalar  # numpy scalars (e.g. int64 labels)
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _numeric._frombuffer  # array, protocol 5

# Python 2 module names, as pickle's own fix_imports maps them (our find_class replaces that code).
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} in pickle") from None


def _str_keys(obj: Any) -> Any:
    """Python 2 pickles' ``str`` keys load as bytes under ``encoding="bytes"``; make them str."""
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _str_keys(v) for k, v in obj.items()}
    return obj


def restricted_load(fileobj: IO[bytes]) -> object:
    """Unpickle ``fileobj`` admitting only numpy arrays, dtypes, numpy scalars and plain Python
    containers, bytes, str and numbers.

    Python 2 strings load as ``bytes`` (``encoding="bytes"``, the CIFAR page's own recipe) so the
    raw image bytes stay intact; dict keys are then decoded to ``str`` (``b"data"`` -> ``"data"``).

    Raises:
        pickle.UnpicklingError: the pickle names any other global (the message names it), or is
            malformed. ``EOFError`` for a truncated file, as ``pickle.load``.
    """
    return _str_keys(_RestrictedUnpickler(fileobj, encoding="bytes").load())
