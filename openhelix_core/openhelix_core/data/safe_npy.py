"""Read ``.npy`` files whose object arrays are pickled, without running code from the file.

``np.load(allow_pickle=True)`` unpickles with the full :mod:`pickle` machinery: a pickle may
name any importable callable (``os.system``, ``builtins.eval``, ``subprocess.Popen``) and have
it called while loading, so a crafted dataset file runs code on the machine that opens it.
CALVIN's ``auto_lang_ann.npy`` is such an object array (a dict of lists, tuples, strings and
arrays), so it cannot be read with ``allow_pickle=False``.

:func:`load_npy` reads the ``.npy`` header with :mod:`numpy.lib.format` and unpickles the
payload of an object array with :class:`NumpyOnlyUnpickler`, which resolves only the globals
that ``np.save`` emits to rebuild arrays, dtypes and numpy scalars, plus plain builtin
containers and scalars. Any other global is refused before it is imported or called.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Tuple, Union

import numpy as np
from numpy.lib import format as npy_format

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy 1.x in numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - exercised only with numpy 1.x installed
    from numpy.core import multiarray as _multiarray


class UnsafePickleError(ValueError):
    """A pickle inside a ``.npy`` file names a global that is not needed to rebuild arrays."""


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    """(module, name) -> the object it resolves to; the complete list of what may be loaded.

    Files written by numpy 1.x name ``numpy.core.multiarray``, files written by numpy 2 name
    ``numpy._core.multiarray``; both resolve to the running numpy's functions, so loading never
    imports a module because the file asked for it."""
    allowed: Dict[Tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        # _reconstruct + ndarray.__setstate__ is how ndarray.__reduce__ rebuilds arrays;
        # scalar(dtype, bytes) is how numpy scalars (np.float64(1.0), ...) are rebuilt.
        allowed[(module, "_reconstruct")] = _multiarray._reconstruct
        allowed[(module, "scalar")] = _multiarray.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # Scalar type objects appear when a pickled dict stores a type itself (e.g. {"dtype": np.float32}).
    for scalar_type in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                        np.uint64, np.float16, np.float32, np.float64, np.longdouble, np.complex64,
                        np.complex128, np.clongdouble, np.str_, np.bytes_):
        allowed[("numpy", scalar_type.__name__)] = scalar_type
    # Protocols below 4 pickle sets through their constructors; the others are listed so that a
    # pickle naming the type object (rather than using the dedicated opcode) still loads.
    for builtin_type in (dict, list, tuple, set, frozenset, str, bytes, int, float, complex, bool):
        allowed[("builtins", builtin_type.__name__)] = builtin_type
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`.

    Args:
        file: binary stream positioned at the pickle.
        source: name of the file, used in error messages.
    """

    def __init__(self, file, source: Union[str, Path]):
        # The same encoding as np.load for Python 2 strings; Python 2 module names are not mapped
        # (find_class below never defers to the base class), so such pickles are refused.
        super().__init__(file, encoding="ASCII")
        self.source = str(source)

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object for ``module.name``; :class:`UnsafePickleError` for anything else."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {self.source}: it references the global '{module}.{name}', which is "
                f"not needed to rebuild numpy arrays and could run code (only numpy array, dtype and scalar "
                f"reconstruction and builtin containers/scalars are allowed)") from None

    def persistent_load(self, pid: Any) -> Any:
        """``np.save`` never writes persistent ids; refuse them with a message naming the file."""
        raise UnsafePickleError(f"refusing to unpickle {self.source}: it holds a persistent id ({pid!r})")


def _read_header(stream, source: str) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(stream)
    except ValueError as error:
        raise ValueError(f"{source} is not a .npy file: {error}") from error
    readers: Dict[Tuple[int, int], Callable] = {
        (1, 0): npy_format.read_array_header_1_0,
        (2, 0): npy_format.read_array_header_2_0,
    }
    if version not in readers:
        # 3.0 only differs by a UTF-8 header, which np.save writes for non-latin-1 field names;
        # numpy has no public reader for it.
        raise ValueError(f"{source}: .npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    return readers[version](stream)


def load_npy(path: Union[str, Path]) -> np.ndarray:
    """The array stored in the ``.npy`` file ``path``.

    Arrays without Python objects are read by numpy with pickle disabled. Object arrays are
    unpickled by :class:`NumpyOnlyUnpickler`.

    Raises:
        UnsafePickleError: the pickle references a global outside :data:`ALLOWED_GLOBALS`.
        ValueError: not a ``.npy`` file, or a corrupt or inconsistent pickle.
    """
    source = str(path)
    with open(path, "rb") as stream:
        shape, _, dtype = _read_header(stream, source)
        if not dtype.hasobject:
            stream.seek(0)
            return npy_format.read_array(stream, allow_pickle=False)
        try:
            array = NumpyOnlyUnpickler(stream, source).load()
        except UnsafePickleError:
            raise
        except Exception as error:  # truncated data, or an allowed callable given bad arguments
            raise ValueError(f"{source}: cannot unpickle its object array: {type(error).__name__}: {error}") from error
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape) or array.dtype != dtype:
        found = f"array {array.shape} {array.dtype}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{source}: header announces an array {tuple(shape)} {dtype} but the pickle holds {found}")
    return array


__all__ = ["ALLOWED_GLOBALS", "NumpyOnlyUnpickler", "UnsafePickleError", "load_npy"]
