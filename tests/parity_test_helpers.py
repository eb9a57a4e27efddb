"""Helpers shared by the test files (one home): the torch-blocking prelude of the torch-free subprocess checks,
and "this backend, or skip saying why"."""

from __future__ import annotations

# Prepended to a ``python -c`` script: importing any of BLOCKED raises, so the script proves that what it runs
# needs none of them (the minimal runtime's promise).
TORCH_BLOCKER = """
import importlib.abc, sys
BLOCKED = ("torch", "transformers", "diffusers", "safetensors", "onnxscript")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name} (the runtime must not need it)")
        return None
sys.meta_path.insert(0, Block())
"""


def backend_or_skip(parity_session, name: str, profile: str = "fp32"):
    """The session's backend ``name`` (its runs are cached and shared with the parity tests); skips, with the
    backend's own reason, where it cannot run here."""
    from acestep_parity.fixtures import available_backend

    return available_backend(parity_session, name, profile, "backend")
