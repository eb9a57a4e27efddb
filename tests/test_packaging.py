"""The two distributions as users install them: wheels built by the standard front end (``python -m build``),
installed into a clean venv (no editable install, no system site-packages; pip's cache serves the pinned wheels).

- ``acestep-ort`` (runtimes/py_ort) alone: the runtime generates a case from an exported folder, torch absent,
  and writes the same audio as the in-repository runtime;
- ``acestep-parity`` on top: ``pytest`` in an unrelated folder runs that folder's tests untouched (the installed
  plugin stays inert there), and in this repository the plugin's options still select backends and cases;
- neither wheel puts a generic top-level package (``runtimes``, ``exporters``, ``host``) into site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from parity_test_helpers import backend_or_skip

from acestep_parity import paths

pytestmark = pytest.mark.xdist_group("packaging")  # one clean venv, built once, on one worker

# What each wheel may install at the top level of site-packages.
TOP_LEVEL = {"acestep-ort": {"acestep_ort"}, "acestep-parity": {"acestep_parity"}}
# The framework's files that its wheel is built from (a copy, so the build leaves nothing in the checkout).
FRAMEWORK_SOURCES = ("pyproject.toml", "README.md", "acestep_parity", "exporters", "runtimes/torch_ref")


def _run(cmd: list[str], cwd: Path, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS")}
    clean.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1"} | (env or {}))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=clean)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _copy_sources(target: Path) -> Path:
    for rel in FRAMEWORK_SOURCES:
        source = paths.REPO_ROOT / rel
        dest = target / rel
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
    return target


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """Both wheels, built with ``python -m build --wheel`` from copies of their sources."""
    root = tmp_path_factory.mktemp("wheels")
    out = root / "dist"
    runtime_src = root / "acestep-ort"
    shutil.copytree(paths.REPO_ROOT / "runtimes" / "py_ort", runtime_src,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build"))
    framework_src = _copy_sources(root / "acestep-parity")
    for source in (runtime_src, framework_src):
        _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)], cwd=root)
    found = {}
    for wheel in out.glob("*.whl"):
        name = wheel.name.split("-")[0].replace("_", "-")
        found[name] = wheel
    assert set(found) == set(TOP_LEVEL), f"built {sorted(p.name for p in out.glob('*'))}"
    return found


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    return venv


def _bin(venv: Path, name: str) -> str:
    return str(venv / "bin" / name)


@pytest.mark.parametrize("dist", sorted(TOP_LEVEL))
def test_wheel_installs_no_generic_top_level_package(wheels, dist):
    with zipfile.ZipFile(wheels[dist]) as archive:
        tops = {n.split("/")[0] for n in archive.namelist() if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == TOP_LEVEL[dist], f"{wheels[dist].name} installs top-level {sorted(tops)}"


@pytest.fixture(scope="module")
def runtime_only_venv(wheels, clean_venv) -> Path:
    _run([_bin(clean_venv, "python"), "-m", "pip", "install", "-q", str(wheels["acestep-ort"])], cwd=clean_venv)
    return clean_venv


@pytest.fixture(scope="module")
def exported_folder(parity_session) -> Path:
    return backend_or_skip(parity_session, "py_ort").onnx_dir


def test_runtime_wheel_generates_a_case_without_torch(runtime_only_venv, exported_folder, tmp_path, parity_session,
                                                      record_property):
    """The runtime wheel alone (torch, transformers, diffusers absent from the venv) writes the case's audio, and
    its captures equal the in-repository runtime's bit for bit."""
    python = _bin(runtime_only_venv, "python")
    probe = _run([python, "-c", "import importlib.util as u, json; print(json.dumps("
                  "[m for m in ('torch', 'transformers', 'diffusers', 'acestep_parity') if u.find_spec(m)]))"],
                 cwd=tmp_path)
    assert probe.stdout.strip() == "[]", f"the runtime-only venv has {probe.stdout.strip()}"
    case_path = paths.CASES_DIR / "text2music_04.json"
    out, dump = tmp_path / "song.wav", tmp_path / "caps.npz"
    _run([_bin(runtime_only_venv, "acestep-ort"), "generate", "--case", str(case_path), "--onnx-dir",
          str(exported_folder), "--out", str(out), "--dump", str(dump), "--quiet"], cwd=tmp_path)
    assert out.is_file() and out.stat().st_size > 0
    from acestep_ort.host.case import load_case

    in_repo = parity_session.backend("py_ort", "fp32").run_case(load_case(case_path))
    with np.load(dump) as wheel_caps:
        for name in ("noise", "vt", "pred_latents", "audio"):
            assert np.array_equal(wheel_caps[name], in_repo[name]), f"{name}: the wheel's runtime differs"
        record_property("audio_samples", int(wheel_caps["audio"].shape[-1]))


@pytest.fixture(scope="module")
def framework_venv(runtime_only_venv, wheels) -> Path:
    """The framework wheel (base dependencies only: the runtime) and pytest with the two plugins pytest.ini needs
    (``--benchmark-skip``, the ``xdist_group`` marker), on top of the runtime venv."""
    wanted = ('"pytest==', '"pytest-xdist==', '"pytest-benchmark==')
    pins = [line.strip().strip('",') for line in (paths.REPO_ROOT / "pyproject.toml").read_text().splitlines()
            if line.strip().startswith(wanted)]
    assert len(pins) == len(wanted), pins
    _run([_bin(runtime_only_venv, "python"), "-m", "pip", "install", "-q", str(wheels["acestep-parity"]), *pins],
         cwd=runtime_only_venv)
    return runtime_only_venv


def test_installed_plugin_leaves_an_unrelated_project_untouched(framework_venv, tmp_path):
    """``pytest`` in a folder that is not this repository: that folder's test runs and passes; the plugin is
    installed (its options are listed) but collects, parametrizes and reports nothing there."""
    project = tmp_path / "elsewhere"
    project.mkdir()
    (project / "test_trivial.py").write_text("def test_one():\n    assert 1 + 1 == 2\n\n\n"
                                             "def test_case_is_not_ours(request):\n"
                                             "    assert 'case' not in request.fixturenames\n")
    help_text = _run([_bin(framework_venv, "pytest"), "--help"], cwd=project).stdout
    assert "--backend" in help_text and "--checkpoint-dir" in help_text, "the plugin is not installed"
    proc = _run([_bin(framework_venv, "pytest"), "-q", "-p", "no:cacheprovider"], cwd=project)
    assert "2 passed" in proc.stdout and "INTERNALERROR" not in proc.stdout + proc.stderr, proc.stdout
    assert not (project / "reports").exists(), "the plugin wrote reports into an unrelated project"


def test_installed_plugin_options_work_in_this_repository(framework_venv):
    """In the checkout, the installed (non-editable) plugin finds cases/ and its options select pairs and cases."""
    proc = _run([_bin(framework_venv, "pytest"), "--co", "-q", "-p", "no:cacheprovider", "--backend", "py_ort",
                 "--case", "text2music_01", "tests/test_parity.py"], cwd=paths.REPO_ROOT)
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert ids, proc.stdout[-2000:]
    assert all("text2music_01" in i for i in ids), [i for i in ids if "text2music_01" not in i][:5]
    assert all("[py_ort~" in i for i in ids), [i for i in ids if "[py_ort~" not in i][:5]
    assert any("py_ort~golden" in i for i in ids) and any("py_ort~torch" in i for i in ids)


def test_onnxruntime_pins_move_together():
    """One ONNX Runtime release everywhere (docs/performance.md: 1.23.2 kept after measuring 1.31.1): the runtime
    wheel's pin, the installed wheel, onnxruntime-node (package and lock), the ``ort`` crate's API feature, the
    Rust runtime's oldest accepted minor, and the C host's requested API version."""
    import json
    import re

    import onnxruntime

    root = paths.REPO_ROOT
    wheel_pin = re.search(r'"onnxruntime==([0-9.]+)"', (root / "runtimes/py_ort/pyproject.toml").read_text()).group(1)
    minor = wheel_pin.split(".")[1]
    node = json.loads((root / "examples/ffi/node/package.json").read_text(encoding="utf-8"))
    lock = json.loads((root / "examples/ffi/node/package-lock.json").read_text(encoding="utf-8"))
    cargo = (root / "rust/acestep-ort/Cargo.toml").read_text(encoding="utf-8")
    dylib = (root / "rust/acestep-ort/src/dylib.rs").read_text(encoding="utf-8")
    c_host = (root / "examples/ffi/c/run_case.c").read_text(encoding="utf-8")
    csharp_host = (root / "examples/ffi/csharp/RunCase.cs").read_text(encoding="utf-8")
    assert onnxruntime.__version__ == wheel_pin
    assert node["dependencies"]["onnxruntime-node"] == wheel_pin
    assert lock["packages"]["node_modules/onnxruntime-node"]["version"] == wheel_pin
    assert re.search(r'features = \[[^\]]*"api-(\d+)"', cargo).group(1) == minor
    assert re.search(r"pub const MIN_ORT_MINOR: u32 = (\d+);", dylib).group(1) == minor
    assert re.search(r"#define ORT_API_WANTED (\d+)", c_host).group(1) == minor
    assert re.search(r"const uint ApiWanted = (\d+);", csharp_host).group(1) == minor
