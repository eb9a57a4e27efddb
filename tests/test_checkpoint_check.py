"""``acestep-parity check-checkpoint``: a damaged checkpoint is found from configs and headers alone, one line per
problem (file, tensor or field, expected vs found), before anything is loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the check builds the library modules: pip install '.[reference]'")

from acestep_parity.checkpoint_check import check_checkpoint  # noqa: E402

pytestmark = pytest.mark.xdist_group("checkpoint_check")


def rename_tensor(path: Path, old: str, new: str) -> None:
    """Rewrite a safetensors header with one key renamed (data offsets are relative to the data, so unchanged)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    header[new] = header.pop(old)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + size:])


def truncate(path: Path, drop: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - drop)


def linked_copy(source: Path, copy: Path, real: tuple[str, ...]) -> Path:
    """``source`` as a folder of symbolic links, except the files named in ``real`` (copied, to be damaged): a
    full-size checkpoint is 13.7 GB, the damaged files are 2.4 GB of it."""
    for path in sorted(source.rglob("*")):
        target = copy / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.relative_to(source).as_posix() in real:
            shutil.copyfile(path, target)
        else:
            target.symlink_to(path)
    return copy


DAMAGED_FILES = ("Qwen3-Embedding-0.6B/model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "acestep-v15-turbo/config.json")


def damage(copy: Path) -> Path:
    """One file truncated, one tensor renamed and one config field changed (the files of DAMAGED_FILES)."""
    truncate(copy / "Qwen3-Embedding-0.6B" / "model.safetensors", 1000)
    vae = copy / "vae" / "diffusion_pytorch_model.safetensors"
    header_key = next(k for k in json.loads(vae.read_bytes()[8:8 + int.from_bytes(vae.read_bytes()[:8], "little")])
                      if k.startswith("decoder.conv1"))
    rename_tensor(vae, header_key, header_key.replace("decoder.conv1", "decoder.conv_first"))
    cfg_path = copy / "acestep-v15-turbo" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["intermediate_size"] = cfg["intermediate_size"] * 2
    cfg_path.write_text(json.dumps(cfg))
    return copy


@pytest.fixture
def damaged(checkpoint_dir: Path, tmp_path: Path) -> Path:
    """A copy of the checkpoint with one file truncated, one tensor renamed and one config field changed."""
    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint_dir, copy)
    return damage(copy)


def test_intact_checkpoint_has_no_problem(checkpoint_dir):
    assert [str(p) for p in check_checkpoint(checkpoint_dir)] == []


def assert_each_damage_named(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert any("Qwen3-Embedding-0.6B/model.safetensors: truncated" in line for line in lines), text
    assert any("diffusion_pytorch_model.safetensors: tensor 'decoder.conv1" in line and "missing" in line
               for line in lines), text
    assert any("'decoder.conv_first" in line and "unexpected" in line for line in lines), text
    shape_lines = [line for line in lines if "acestep-v15-turbo/model.safetensors" in line and "expected shape" in line]
    assert shape_lines and all("config.json" in line and "found" in line for line in shape_lines), text
    assert all(": " in line and "\n" not in line for line in lines)


def test_each_damage_is_named(damaged, record_property):
    lines = [str(p) for p in check_checkpoint(damaged)]
    record_property("problems", len(lines))
    assert_each_damage_named(lines)


@pytest.mark.slow
def test_full_preset_damage_found_in_seconds(tmp_path, record_property):
    """The full-size preset (13.7 GB, ``acestep-parity synth --preset full``, generated on first use), damaged
    the same three ways: the CLI names each problem from headers alone, exit 2, in seconds (``pytest -m slow``)."""
    import time

    from acestep_parity.paths import ensure_synthetic_checkpoint

    full = ensure_synthetic_checkpoint("full")
    start = time.perf_counter()
    assert [str(p) for p in check_checkpoint(full)] == []
    record_property("intact_seconds", round(time.perf_counter() - start, 2))
    copy = damage(linked_copy(full, tmp_path / "ckpt", DAMAGED_FILES))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "acestep_parity.cli", "check-checkpoint", str(copy)],
                          capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    record_property("damaged_cli_seconds", round(seconds, 2))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert_each_damage_named(proc.stdout.splitlines())
    assert seconds < 120, f"the header check took {seconds:.0f} s"  # a full load takes minutes; this must not


def test_missing_files_and_bad_configs(checkpoint_dir, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint_dir, copy)
    (copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    (copy / "Qwen3-Embedding-0.6B" / "config.json").write_text("{")
    (copy / "acestep-v15-turbo" / "config.json").write_text("{}")
    lines = [str(p) for p in check_checkpoint(copy)]
    text = "\n".join(lines)
    assert f"{copy}/vae/diffusion_pytorch_model.safetensors: missing" in lines, text
    assert any(line.startswith(f"{copy}/Qwen3-Embedding-0.6B/config.json: not a valid JSON file") for line in lines)
    assert any(line.startswith(f"{copy}/acestep-v15-turbo/config.json: field '") and "is missing" in line
               for line in lines), text
    assert [str(p) for p in check_checkpoint(tmp_path / "nowhere")] == [f"{tmp_path / 'nowhere'}: not a folder"]


def test_cli_reports_and_exits_2(damaged, checkpoint_dir):
    cmd = [sys.executable, "-m", "acestep_parity.cli", "check-checkpoint"]
    bad = subprocess.run([*cmd, str(damaged)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2, bad.stderr
    assert "Traceback" not in bad.stderr and "truncated" in bad.stdout and "problem(s)" in bad.stderr
    good = subprocess.run([*cmd, str(checkpoint_dir)], capture_output=True, text=True, timeout=300)
    assert good.returncode == 0 and "no problem" in good.stdout, good.stdout + good.stderr


def test_pytest_with_a_wrong_checkpoint_dir_is_one_usage_error(tmp_path):
    """``pytest --checkpoint-dir <empty folder>``: one usage error naming the option and the missing files,
    before any test runs (it was one FileNotFoundError traceback per test)."""
    from acestep_parity import paths

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pytest", f"--checkpoint-dir={empty}", "-q", "-p", "no:cacheprovider",
                           "tests/test_framework.py"], cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out[-2000:]
    assert "ERROR: --checkpoint-dir:" in out and "acestep-v15-turbo/config.json" in out and "Traceback" not in out
