"""Every example host's README (``examples/ffi/<host>/README.md``) works as typed, in the clone and in the unpacked
``make dist`` archive.

A README marks each shell block (a fence opened with ```` ```sh ````) on the line before it:

- ``<!-- test: clone -->``: run from the repository root in the state ``make run`` leaves (the library in
  ``target/release``, the export in ``.cache/artifacts/synth-tiny-*/fp32``, the venv's ``bin`` first on PATH), in
  a sandbox: a temporary folder whose entries link to the repository's, with ``examples/`` a copy (what a build
  writes lands there, not in the clone);
- ``<!-- test: dist -->``: run from the root of the release archive (``scripts/dll_release.sh`` into a temporary
  folder, unpacked into another), with ``ONNX_DIR`` (the export) and ``CASES`` (``cases/``) set, as the README
  says, and no ``ACESTEP_FFI_LIB`` / ``CARGO_TARGET_DIR``: the hosts find ``lib/`` and ``include/`` themselves.

A ```` ```text ```` block marked ``<!-- output -->`` right after a command block is its documented output: every
line of it must be a line of the commands' stdout. A host's blocks of one kind run in order in one sandbox, each
as one ``bash -euo pipefail`` script. An unmarked shell block fails ``test_every_shell_block_is_marked``. A test
skips, naming the tool, only where the host's toolchain is missing (``make``/``cc``/``go``, ``node``/``npm``,
``mcs``/``mono``).

npm gets the tool cache's npm cache (``npm_config_cache``, ``npm_config_prefer_offline``: the same cache
``tests/test_ffi.py`` fills), so ``npm ci`` runs as typed without the registry once the cache holds the lock's
packages.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from parity_test_helpers import ORT_GO_MODULE, ORT_HEADER, TOOL_CACHE
from test_readme_commands import _env, _sandbox

from acestep_parity import paths

ROOT = paths.REPO_ROOT
EXAMPLES = ROOT / "examples" / "ffi"
HOSTS = ("c", "csharp", "node", "python")
KINDS = ("clone", "dist")
TIMEOUT = 600


@dataclass
class Block:
    host: str
    kind: str  # clone | dist | "" (unmarked)
    lineno: int
    script: str
    output: list[str] = field(default_factory=list)


def readme_blocks(host: str) -> list[Block]:
    """The shell blocks of a host's README, each with the kind its marker names and its documented output."""
    lines = (EXAMPLES / host / "README.md").read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    marker, i = "", 0
    while i < len(lines):
        text = lines[i].strip()
        if text.startswith("```"):
            lang, body, start = text[3:].strip(), [], i + 1
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if lang == "sh":
                kind = re.fullmatch(r"<!-- test: (\w+) -->", marker)
                blocks.append(Block(host, kind.group(1) if kind else "", start, "\n".join(body)))
            elif lang == "text" and marker == "<!-- output -->" and blocks:
                blocks[-1].output += [line.strip() for line in body if line.strip()]
            marker = ""
        elif text:
            marker = text
        i += 1
    return blocks


def _readme_text(host: str) -> str:
    readme = EXAMPLES / host / "README.md"
    return readme.read_text(encoding="utf-8") if readme.is_file() else ""


def test_every_host_has_a_readme():
    missing = [host for host in HOSTS if not (EXAMPLES / host / "README.md").is_file()]
    assert not missing, f"examples/ffi/<host>/README.md missing for {missing}"
    hosts = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
    assert hosts == sorted(HOSTS), f"examples/ffi holds {hosts}: add the new host to HOSTS (and its README)"


@pytest.mark.parametrize("host", HOSTS, ids=[f"readme-{h}" for h in HOSTS])
def test_every_shell_block_is_marked(host):
    """Every ```sh block says how it is checked; each host has a clone and a dist block with documented output."""
    if not _readme_text(host):
        pytest.fail(f"examples/ffi/{host}/README.md missing")
    blocks = readme_blocks(host)
    unmarked = [f"README.md:{b.lineno}" for b in blocks if b.kind not in KINDS]
    assert not unmarked, f"shell blocks without <!-- test: clone|dist --> before them: {unmarked}"
    for kind in KINDS:
        assert any(b.kind == kind and b.output for b in blocks), f"no {kind} block with a documented output"


def test_readme_parsing():
    """The extraction itself: markers, languages and the output block after a command block."""
    blocks = readme_blocks("c")
    assert [b.kind for b in blocks][:1] == ["clone"] and blocks[0].script.startswith("make -C examples/ffi/c")
    assert blocks[0].output[0].startswith('{"case": "text2music_02"')


def _toolchain(host: str) -> None:
    """Skip, naming what is missing, where the host's toolchain is absent."""
    need = {"c": ["make", "cc"], "node": ["node", "npm"], "csharp": ["mcs", "mono"], "python": []}[host]
    missing = [tool for tool in need if shutil.which(tool) is None]
    if host == "c" and shutil.which("go") is None and not ORT_HEADER.is_file():
        missing.append(f"go (to fetch onnxruntime_c_api.h, {ORT_GO_MODULE})")
    if missing:
        pytest.skip(f"the {host} host's README needs {', '.join(missing)}")


def _host_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "ACESTEP_TOOL_CACHE": str(TOOL_CACHE), "npm_config_cache": str(TOOL_CACHE / "npm"),
            "npm_config_prefer_offline": "true", "npm_config_update_notifier": "false"}


def _run_blocks(blocks: list[Block], cwd: Path, env: dict[str, str], record_property) -> None:
    assert blocks, "no block of this kind"
    for block in blocks:
        started = time.monotonic()
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.script], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
        seconds = round(time.monotonic() - started, 2)
        record_property(f"L{block.lineno}_seconds", seconds)
        record_property(f"L{block.lineno}_exit_code", proc.returncode)
        tail = (proc.stdout + proc.stderr)[-4000:]
        where = f"examples/ffi/{block.host}/README.md:{block.lineno}"
        assert proc.returncode == 0, f"{where}: exited {proc.returncode}:\n{block.script}\n---\n{tail}"
        got = {line.strip() for line in proc.stdout.splitlines()}
        missing = [line for line in block.output if line not in got]
        assert not missing, f"{where}: documented output not printed: {missing}\n---\n{proc.stdout[-3000:]}"


def _clone_sandbox(tmp_path: Path) -> Path:
    box = _sandbox(tmp_path)
    (box / "examples").unlink()
    shutil.copytree(ROOT / "examples", box / "examples", symlinks=True,
                    ignore=shutil.ignore_patterns("node_modules", "run_case", "*.exe", "out"))
    return box


@pytest.mark.parametrize("host", HOSTS, ids=[f"hosts-{h}" for h in HOSTS])
def test_readme_in_the_clone(host, library, onnx_artifacts, tmp_path, record_property):
    """The README's clone blocks, as typed, after ``make run``: exit 0 and the documented output."""
    if not _readme_text(host):
        pytest.fail(f"examples/ffi/{host}/README.md missing")
    _toolchain(host)
    if paths.cache_dir().resolve() != (ROOT / ".cache").resolve():
        pytest.skip(f"the cache is {paths.cache_dir()} ($ACESTEP_PARITY_CACHE), not the .cache/ the README names")
    if (ROOT / "target" / "release" / library.name).resolve() != library.resolve():
        pytest.skip(f"the library is {library}, not the target/release/ the README names")
    box = _clone_sandbox(tmp_path)
    _run_blocks([b for b in readme_blocks(host) if b.kind == "clone"], box, _host_env(_env()), record_property)


@pytest.fixture(scope="module")
def dist_archive(library, tmp_path_factory) -> Path:
    """``scripts/dll_release.sh`` (what ``make dist`` runs after building) into a temporary DIST_DIR."""
    dist = tmp_path_factory.mktemp("dist")
    env = {**_env(), "DIST_DIR": str(dist), "CARGO_TARGET_DIR": str(library.parent.parent)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "dll_release.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    archives = sorted(dist.glob("acestep-runtime-*.tar.gz"))
    assert len(archives) == 1, archives
    return archives[0]


def _unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (root,) = into.iterdir()
    return root


def test_dist_archive_checksums(dist_archive, tmp_path, record_property):
    """The archive's .sha256 and its SHA256SUMS (every file but itself) hold; the hosts' READMEs are inside."""
    name, digest = (dist_archive.parent / f"{dist_archive.name}.sha256").read_text(encoding="utf-8").split()[:2][::-1]
    assert name == dist_archive.name and digest == hashlib.sha256(dist_archive.read_bytes()).hexdigest()
    root = _unpack(dist_archive, tmp_path)
    sums = dict(line.split("  ", 1)[::-1] for line in (root / "SHA256SUMS").read_text(encoding="utf-8").splitlines())
    files = sorted(f"./{p.relative_to(root)}" for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    assert sorted(sums) == files
    bad = [f for f in files if hashlib.sha256((root / f).read_bytes()).hexdigest() != sums[f]]
    assert not bad, bad
    record_property("files", len(files))
    record_property("archive_bytes", dist_archive.stat().st_size)
    assert {f"./examples/{host}/README.md" for host in HOSTS} <= set(files)
    assert not [f for f in files if "node_modules" in f or f.endswith((".exe", "/run_case"))], "build outputs packed"


@pytest.mark.parametrize("host", HOSTS, ids=[f"dist-{h}" for h in HOSTS])
def test_readme_in_the_unpacked_archive(host, dist_archive, onnx_artifacts, tmp_path, record_property):
    """The README's dist blocks from the root of the unpacked archive: the hosts find lib/ and include/ there."""
    _toolchain(host)
    root = _unpack(dist_archive, tmp_path)
    if not (root / "examples" / host / "README.md").is_file():
        pytest.fail(f"examples/{host}/README.md is not in the archive")
    env = _host_env(_env())
    for name in ("ACESTEP_FFI_LIB", "CARGO_TARGET_DIR", "LD_LIBRARY_PATH"):
        env.pop(name, None)
    env.update(ONNX_DIR=str(onnx_artifacts), CASES=str(paths.CASES_DIR))
    blocks = [b for b in readme_blocks(host) if b.kind == "dist"]
    # the archive's README is the clone's (the blocks run are the packed file's, which must be the same)
    assert (root / "examples" / host / "README.md").read_text(encoding="utf-8") == _readme_text(host)
    _run_blocks(blocks, root, env, record_property)
