"""The ``py_ort`` backend: the minimal Python ONNX Runtime runtime (``acestep_ort``) on the shared ONNX
folder (:mod:`acestep_parity.backends.onnx_folder`)."""

from __future__ import annotations

from acestep_parity.backends.base import Availability, EngineBackend, register
from acestep_parity.backends.onnx_folder import OnnxFolderBackend, OnnxFolderUnavailable


@register
class PyOrtBackend(OnnxFolderBackend, EngineBackend):
    name = "py_ort"

    def availability(self) -> Availability:
        try:
            import onnxruntime  # noqa: F401
            import tokenizers  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"{exc}; install with `pip install -e .`")
        try:
            _ = self.onnx_dir  # exports on first use
        except OnnxFolderUnavailable as exc:
            return Availability(False, str(exc))
        return Availability(True)

    @property
    def engine(self):
        if not hasattr(self, "_engine"):
            from acestep_ort.pipeline import load_engine

            self._engine = load_engine(self.onnx_dir)
        return self._engine
