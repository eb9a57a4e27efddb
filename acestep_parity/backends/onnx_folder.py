"""The one provider of the exported ONNX folder that the ONNX backends (py_ort, rust, dll) all run.

It exports the checkpoint's graphs once (cached under ``cache_dir()/artifacts/<checkpoint-id>/<profile>``,
shared by pytest-xdist workers through a file lock) and makes the folder self-contained with the runtime assets.
Exporting needs the reference extras (torch); where they are missing the backends say so and skip.
"""

from __future__ import annotations

from pathlib import Path

from acestep_parity.backends.base import BackendContext


class OnnxFolderUnavailable(RuntimeError):
    """No ONNX folder can be provided here; the message says why and what to install."""


def onnx_folder(ctx: BackendContext) -> Path:
    """The exported folder for ``ctx`` (checkpoint and profile), exported on first use."""
    if ctx.profile != "fp32":
        raise OnnxFolderUnavailable(
            f"no {ctx.profile} ONNX artifacts: only the fp32 profile is exported in this checkout "
            "(quantization profiles are not implemented yet)")
    try:
        from acestep_parity.checkpoint import file_hashes
        from exporters.export import ensure_artifacts
    except ImportError as exc:
        raise OnnxFolderUnavailable(
            f"cannot export the ONNX graphs here ({exc}); install the exporter dependencies with "
            "`pip install -e '.[reference]'`") from None
    from acestep_parity.runtime_assets import copy_runtime_assets, missing_assets

    directory = Path(ensure_artifacts(ctx.checkpoint_dir, ctx.checkpoint_id, file_hashes(ctx.checkpoint_dir)))
    if missing_assets(directory):
        copy_runtime_assets(ctx.checkpoint_dir, directory)
    return directory
