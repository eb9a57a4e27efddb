"""Read a single tensor saved with ``torch.save`` (zip format) without importing torch.

The runtime needs ``silence_latent.pt`` but must not depend on torch. A ``torch.save`` archive is a zip with a
pickle (``data.pkl``) that calls ``torch._utils._rebuild_tensor_v2`` on storages kept as raw little-endian bytes
under ``data/<key>``; a restricted unpickler that only knows those names rebuilds the array with numpy and
refuses anything else (so no arbitrary code runs).
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes):
        import io

        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"unsupported object {module}.{name} in a tensor file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(raw, dtype=np.dtype(_STORAGE_DTYPES[storage_type]).newbyteorder("<"), count=numel)


def load_tensor(path: Path) -> np.ndarray:
    """The tensor stored in ``path`` as a numpy array (little-endian archives only, as torch writes them)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
        if pkl is None:
            raise ValueError(f"{path} is not a torch.save zip archive (no data.pkl)")
        prefix = pkl[: -len("/data.pkl")]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder) != b"little":
            raise ValueError(f"{path}: big-endian tensor files are not supported")
        result = _TensorUnpickler(archive, prefix, archive.read(pkl)).load()
    if not isinstance(result, np.ndarray):
        raise ValueError(f"{path} holds a {type(result).__name__}, not a single tensor")
    return result
