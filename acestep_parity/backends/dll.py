"""The ``dll`` backend: a Python host running ONNX Runtime itself and calling the Rust C-ABI library (cdylib)
for the host logic — not built in this checkout."""

from __future__ import annotations

from acestep_parity.backends.base import NotBuiltBackend, register


@register
class DllBackend(NotBuiltBackend):
    name = "dll"
    how_to_build = ("the Rust C-ABI library (rust/acestep-ffi, cdylib) is not implemented in this checkout yet; "
                    "once it is: `cargo build --release -p acestep-ffi`")
