"""Helpers shared by the test files (one home): the torch-blocking prelude of the torch-free subprocess checks,
"this backend, or skip saying why", and where the example hosts' tools live."""

from __future__ import annotations

import os
from pathlib import Path

# The project's tool cache (Go modules, npm, the Node host's packages), as the Makefiles name it.
TOOL_CACHE = Path(os.environ.get("ACESTEP_TOOL_CACHE", Path.home() / ".cache" / "acestep-parity"))
# The Go module that carries ONNX Runtime 1.23's onnxruntime_c_api.h (examples/ffi/c/Makefile's ORT_GO_MODULE).
ORT_GO_MODULE = "github.com/yalue/onnxruntime_go@v1.27.0"
ORT_HEADER = TOOL_CACHE / "gomod" / ORT_GO_MODULE / "onnxruntime_c_api.h"

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
