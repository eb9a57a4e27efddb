"""Registers ``py_ort`` with the parity framework: export (cached) the graphs, then run the ORT engine."""

from __future__ import annotations

from pathlib import Path

from acestep_parity.backends import Availability, Backend, register
from acestep_parity.cases import Case
from acestep_parity.host.pipeline import Captures


@register
class PyOrtBackend(Backend):
    name = "py_ort"

    def availability(self) -> Availability:
        if self.ctx.profile != "fp32":
            return Availability(False, f"no {self.ctx.profile} ONNX artifacts: only the fp32 profile is exported in "
                                       "this checkout (quantization profiles are not implemented yet)")
        try:
            import onnxruntime  # noqa: F401
            import tokenizers  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"{exc}; install with `pip install -e .`")
        try:
            _ = self.onnx_dir  # exports on first use
        except ImportError as exc:
            return Availability(False, f"cannot export the ONNX graphs here ({exc}); install the exporter "
                                       "dependencies with `pip install -e '.[reference]'` or pass a ready folder")
        return Availability(True)

    @property
    def onnx_dir(self) -> Path:
        """The fp32 artifacts for this checkpoint, exported once and cached (shared by xdist workers)."""
        if not hasattr(self, "_onnx_dir"):
            from acestep_parity.checkpoint import file_hashes
            from acestep_parity.runtime_assets import copy_runtime_assets, missing_assets
            from exporters.export import ensure_artifacts

            directory = ensure_artifacts(self.ctx.checkpoint_dir, self.ctx.checkpoint_id,
                                         file_hashes(self.ctx.checkpoint_dir))
            if missing_assets(directory):
                copy_runtime_assets(self.ctx.checkpoint_dir, directory)
            self._onnx_dir = Path(directory)
        return self._onnx_dir

    @property
    def engine(self):
        if not hasattr(self, "_engine"):
            from runtimes.py_ort.pipeline import load_engine

            self._engine = load_engine(self.onnx_dir)
        return self._engine

    def _run(self, case: Case) -> Captures:
        if case.task == "simple_mode":
            return self.engine.generate_simple(case)
        return self.engine.generate(case.request())

    def dit_step(self, xt, t, encoder_hidden_states, context_latents):
        return self.engine.dit(xt, t, encoder_hidden_states, context_latents)
