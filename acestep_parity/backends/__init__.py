"""Backend adapters, on the framework side: the interface and registry (:mod:`.base`), one module per backend,
and the shared provider of the exported ONNX folder (:mod:`.onnx_folder`).

``runtimes/`` holds runtimes only; the adapters here drive them, so a runtime's imports stay torch-free by
construction (a runtime never imports exporters, loaders or test machinery).
"""

from acestep_parity.backends.base import (
    BACKEND_NAMES,
    PROFILES,
    REGISTRY,
    Availability,
    Backend,
    BackendContext,
    register,
)
from acestep_parity.backends.dll import DllBackend
from acestep_parity.backends.py_ort import PyOrtBackend
from acestep_parity.backends.rust import RustBackend
from acestep_parity.backends.torch_ref import TorchBackend

__all__ = [
    "BACKEND_NAMES", "PROFILES", "REGISTRY", "Availability", "Backend", "BackendContext", "register", "DllBackend", "PyOrtBackend",
    "RustBackend", "TorchBackend",
]
