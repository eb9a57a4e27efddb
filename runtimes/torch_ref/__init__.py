"""PyTorch reference pipeline (CPU, float32) with upstream ACE-Step 1.5 semantics."""

from acestep_parity.torch_ref.pipeline import TorchEngine, load_engine

__all__ = ["TorchEngine", "load_engine"]
