"""The ``rust`` backend: the Rust ORT runtime (``rust/``, the ``generate`` binary) — not built in this checkout."""

from __future__ import annotations

from acestep_parity.backends.base import NotBuiltBackend, register


@register
class RustBackend(NotBuiltBackend):
    name = "rust"
    how_to_build = ("the Rust ORT runtime (rust/) is not implemented in this checkout yet; once it is: "
                    "`cargo build --release`")
