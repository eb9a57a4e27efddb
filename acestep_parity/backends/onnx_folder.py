"""The one provider of the exported ONNX folder that the ONNX backends (py_ort, rust, dll) all run.

It exports the checkpoint's graphs once (cached under ``cache_dir()/artifacts/<checkpoint-id>/<profile>``,
shared by pytest-xdist workers through a file lock) and makes the folder self-contained with the runtime assets.
Exporting needs the reference extras (torch); where they are missing the backends say so and skip. A lighter
profile (fp16, int8_dynamic, int8_static) is derived from the fp32 folder into the sibling ``<profile>`` folder
(:func:`acestep_parity.exporters.profiles.derive.ensure_profile`), so every ONNX backend runs every profile.
"""

from __future__ import annotations

from pathlib import Path

from acestep_parity.backends.base import BackendContext


class OnnxFolderUnavailable(RuntimeError):
    """No ONNX folder can be provided here; the message says why and what to install."""


class OnnxFolderBackend:
    """Mixin of the ONNX backends (py_ort, rust, dll): ``onnx_dir``, this backend's folder, exported on first use."""

    ctx: BackendContext

    @property
    def onnx_dir(self) -> Path:
        if not hasattr(self, "_onnx_dir"):
            self._onnx_dir = onnx_folder(self.ctx)
        return self._onnx_dir


def onnx_folder(ctx: BackendContext) -> Path:
    """The exported folder for ``ctx`` (checkpoint and profile), exported on first use."""
    try:
        from acestep_parity.checkpoint import file_hashes
        from acestep_parity.exporters.export import ensure_artifacts
    except ImportError as exc:
        raise OnnxFolderUnavailable(
            f"cannot export the ONNX graphs here ({exc}); install the exporter dependencies with "
            "`pip install -e '.[reference]'`") from None
    from acestep_ort.host.assets import copy_runtime_assets, missing_assets

    directory = Path(ensure_artifacts(ctx.checkpoint_dir, ctx.checkpoint_id, file_hashes(ctx.checkpoint_dir)))
    if missing_assets(directory):
        copy_runtime_assets(ctx.checkpoint_dir, directory)
    if ctx.profile == "fp32":
        return directory
    from acestep_parity.exporters.profiles.derive import ProfileError, ensure_profile

    try:
        return ensure_profile(directory, ctx.profile)
    except ProfileError as exc:
        raise OnnxFolderUnavailable(f"cannot derive the {ctx.profile} profile: {exc}") from None
