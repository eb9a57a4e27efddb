"""The ``dll`` backend: a Python host running ONNX Runtime itself (the ``onnxruntime`` wheel, the same graphs as
py_ort from the shared ONNX folder) and calling the Rust C-ABI library ``libacestep_runtime`` (``rust/acestep-ffi``)
for all host logic: case validation, prompts, tokenization, noise, schedule, scheduler step, tiling,
post-processing, and in simple mode the LM prompt, constrained-decoding FSM, metadata and the planner-to-text2music
hand-off (the host runs ``lm_prefill``/``lm_decode`` and picks the greedy token).

The host is the example program ``examples/ffi/python/acestep_ffi.py`` (loaded from its file, so the example
that ships with the library is the code the parity suite proves). Its sessions get py_ort's own
``SessionConfig`` options, so ``dll~py_ort`` is expected to be exact. The adapter builds nothing: without the
library it skips, saying how to build it (``make test`` does).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from acestep_ort.host.case import Case
from acestep_ort.host.pipeline import Captures
from acestep_parity import paths
from acestep_parity.backends.base import Availability, Backend, register
from acestep_parity.backends.onnx_folder import OnnxFolderBackend, OnnxFolderUnavailable
from acestep_parity.backends.rust import default_target_dir

HOST_FILE = paths.REPO_ROOT / "examples" / "ffi" / "python" / "acestep_ffi.py"
BUILD_HINT = "build it with `cargo build --release -p acestep-ffi` (or `make test`, which builds it)"


def load_host_module():
    """The example host as a module (it is a standalone program, not part of the package)."""
    spec = importlib.util.spec_from_file_location("acestep_ffi_host", HOST_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_library() -> Path | None:
    """``$ACESTEP_FFI_LIB``, else ``libacestep_runtime.so`` in the cargo target folder (``$CARGO_TARGET_DIR``, else ``target/``)."""
    env = os.environ.get("ACESTEP_FFI_LIB")
    if env:
        return Path(env) if Path(env).is_file() else None
    candidate = default_target_dir() / "release" / "libacestep_runtime.so"
    return candidate if candidate.is_file() else None


@register
class DllBackend(OnnxFolderBackend, Backend):
    name = "dll"

    def availability(self) -> Availability:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"{exc}; install with `pip install -e .`")
        if find_library() is None:
            return Availability(False, f"the C-ABI library libacestep_runtime.so is not built (looked in "
                                       f"{default_target_dir()}/release and target/release); {BUILD_HINT}")
        try:
            _ = self.onnx_dir  # exports on first use
        except OnnxFolderUnavailable as exc:
            return Availability(False, str(exc))
        return Availability(True)

    @property
    def host(self):
        if not hasattr(self, "_host"):
            from acestep_ort.session_manager import SessionConfig

            config = SessionConfig()
            module = load_host_module()
            self._host = module.Host(self.onnx_dir, find_library(), options=config.session_options(),
                                     providers=config.resolved_providers())
        return self._host

    def _run(self, case: Case) -> Captures:
        return Captures(arrays=self.host.run_case(json.loads(case.path.read_text(encoding="utf-8"))))

    def dit_step(self, xt, t, encoder_hidden_states, context_latents):
        return self.host.dit(xt, t, encoder_hidden_states, context_latents)

    def lm_teacher_logits(self, prompt_ids, tokens):
        return self.host.lm_teacher_logits(prompt_ids, tokens)
