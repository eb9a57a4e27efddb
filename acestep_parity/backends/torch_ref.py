"""The ``torch`` backend: the PyTorch reference pipeline (``acestep_parity.torch_ref``), fp32 only."""

from __future__ import annotations

from acestep_parity.backends.base import Availability, EngineBackend, register


@register
class TorchBackend(EngineBackend):
    name = "torch"

    def availability(self) -> Availability:
        if self.ctx.profile != "fp32":
            return Availability(False, f"the PyTorch reference is fp32 only (profile {self.ctx.profile})")
        try:
            import diffusers  # noqa: F401
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"{exc}; install with `pip install -e '.[reference]'`")
        return Availability(True)

    @property
    def engine(self):
        if not hasattr(self, "_engine"):
            from acestep_parity.torch_ref import load_engine

            self._engine = load_engine(self.ctx.checkpoint_dir)
        return self._engine
