"""Session fixtures of the ONNX export tests: the exported fp32 artifacts (exported once per checkpoint and
shared by pytest-xdist workers through ``acestep_parity.exporters.export.ensure_artifacts``), their manifest, the reference
modules and pinned ONNX Runtime sessions; and, when the run ends, the scaling benchmarks' table
(``tests/scaling_report.py``), whatever order they ran in."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from scaling_report import SCALING, plot_png, summary_lines


@pytest.fixture(scope="session")
def onnx_artifacts(parity_session) -> Path:
    """``cache_dir()/artifacts/<checkpoint-id>/fp32``: every graph plus ``manifest.json``, exported on first use
    (under a file lock) and reused while the manifest matches the checkpoint hashes and exporter settings."""
    pytest.importorskip("torch", reason="exporting needs the reference extras: pip install -e '.[reference]'")
    from acestep_parity.exporters.export import ensure_artifacts

    directory, hashes, checkpoint_id = parity_session.checkpoint
    return ensure_artifacts(directory, checkpoint_id, hashes)


@pytest.fixture(scope="session")
def library() -> Path:
    """The built C-ABI library ``libacestep_runtime.so`` (the FFI tests and the example hosts' READMEs)."""
    from acestep_parity.backends.dll import BUILD_HINT, find_library

    lib = find_library()
    if lib is None:
        pytest.skip(f"libacestep_runtime.so is not built; {BUILD_HINT}")
    return lib


@pytest.fixture(scope="session")
def onnx_manifest(onnx_artifacts: Path) -> dict:
    return json.loads((onnx_artifacts / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def reference_models(checkpoint_dir: Path):
    """The PyTorch reference modules of the checkpoint (one load per worker)."""
    pytest.importorskip("torch", reason="the reference needs the reference extras: pip install -e '.[reference]'")
    from acestep_parity.checkpoint import load_reference_models

    return load_reference_models(checkpoint_dir)


@pytest.fixture(scope="session")
def onnx_session(onnx_artifacts: Path):
    """``onnx_session(graph)``: a cached ORT session of an artifact with the pinned options."""
    from acestep_parity.exporters.validate import open_session

    cache: dict[str, object] = {}

    def get(graph: str):
        if graph not in cache:
            cache[graph] = open_session(onnx_artifacts / f"{graph}.onnx")
        return cache[graph]

    return get


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    table = config.stash.get(SCALING, None)
    if table is not None and table.rows:
        terminalreporter.write_sep("-", "scaling benchmarks (/ torch: time / torch's time, < 1 is faster)")
        for line in summary_lines(table):
            terminalreporter.write_line(line)


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix, summary, postfix, session: pytest.Session) -> None:
    table = session.config.stash.get(SCALING, None)
    png = plot_png(table.rows) if table is not None else None
    if png is not None:
        prefix.append(f'<h2>Scaling</h2><img alt="time vs T per backend" '
                      f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')
