"""Every command line of README.md (all its fenced blocks) and of the docs blocks marked ``<!-- commands -->`` (the
line before the fence) works as typed in the state ``make run`` leaves: the synthetic checkpoint and its fp32
export in ``.cache``, the venv's ``bin`` first on PATH (what ``source .venv/bin/activate`` does), from the
repository root.

Each line is classified in ``COMMANDS`` (keyed by the line without its trailing comment); a line that is not
there fails ``test_every_command_is_classified``, so a new or edited README line must say how it is checked:

- ``co``: a pytest line, run with ``--co -q`` added (collection: options parse, ``-k`` / ``-m`` select at least
  one test, otherwise pytest exits 5);
- ``run``: run as typed (cheap), in a sandbox (a temporary folder whose entries link to the repository's) where
  it writes files;
- ``help``: too expensive or with placeholders: ``CHECK`` (a ``--help``) runs, and every ``--option`` the line
  names appears in its output;
- ``dry``: ``CHECK`` runs instead (``make -n``, an import), exit status 0;
- ``pip``: every path the line installs is a project (installed here) whose extras exist (``pip install`` itself
  needs PyPI);
- ``venv``: ``.venv/bin/activate`` exists beside the interpreter running these tests.

``ALT`` placeholders (``/path/to/...``) are replaced by the folders ``make run`` creates before a line runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from acestep_parity import paths

ROOT = paths.REPO_ROOT
MARKER = "<!-- commands -->"
DOCS = ("docs/parity_ops.md", "docs/onnx_quantization.md", "docs/python_ort_runtime.md", "docs/realsize.md")  # the docs with marked command blocks
CKPT = ".cache/checkpoints/synth-tiny"
# placeholder -> what the check puts there (the folders make run creates, or the repository's cases/)
ALT = {"/path/to/checkpoints": CKPT, "~/ACE-Step-1.5/checkpoints": CKPT, "/path/to/my_cases/": "cases/"}
TIMEOUT = 900


@dataclass(frozen=True)
class Line:
    file: str
    lineno: int
    command: str

    @property
    def id(self) -> str:
        stem = "readme" if self.file == "README.md" else Path(self.file).stem
        words = [w for w in re.split(r"[^A-Za-z0-9_]+", self.command) if w not in ("", "pytest", "venv", "bin")][:3]
        return f"{stem}-L{self.lineno}-" + "-".join(["pytest", *words] if "pytest" in self.command else words)


def strip_comment(text: str) -> str:
    """The line without a trailing shell comment (``#`` after whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def command_lines(file: str) -> list[Line]:
    """README.md: the lines of every fenced block; a docs file: those of the blocks right after ``MARKER``."""
    lines = (ROOT / file).read_text(encoding="utf-8").splitlines()
    out, inside, take, previous = [], False, False, ""
    for n, text in enumerate(lines, 1):
        if text.startswith("```"):
            inside = not inside
            take = inside and (file == "README.md" or previous.strip() == MARKER)
        elif inside and take and strip_comment(text).strip():
            out.append(Line(file, n, strip_comment(text).strip()))
        previous = text
    return out


LINES = [line for file in ("README.md", *DOCS) for line in command_lines(file)]

# command (as typed, comment stripped) -> (kind, CHECK: the command run instead, for help / dry)
COMMANDS: dict[str, tuple[str, str | None]] = {
    # README: make
    "make run": ("dry", "make -n run"),
    "make test": ("dry", "make -n test"),
    "make header; make dist": ("dry", "make -n header && make -n dist"),
    # README: installing without the Makefile
    "pip install ./runtimes/py_ort": ("pip", None),
    "pip install ./runtimes/py_ort '.[reference,test]'": ("pip", None),
    "python -m build --wheel runtimes/py_ort; python -m build --wheel .": ("help", "python -m build --help"),
    # README: using the suite
    "source .venv/bin/activate": ("venv", None),
    'pytest -k "dit and step"': ("co", None),
    "pytest -k text2music_03": ("co", None),
    "pytest --backend torch --case 'text2music_0[12]'": ("co", None),
    "pytest --checkpoint-dir /path/to/checkpoints": ("co", None),
    "pytest --update-golden": ("co", None),
    "pytest -n 2": ("co", None),
    'pytest -k "py_ort and torch"': ("co", None),
    "pytest -k golden": ("co", None),
    "pytest --cases-dir /path/to/my_cases/": ("co", None),
    # README: command-line tools
    "acestep-parity synth --preset tiny|full --out DIR": ("help", "acestep-parity synth --help"),
    f"acestep-parity check-checkpoint {CKPT}": ("run", None),
    "acestep-parity freeze [--checkpoint-dir DIR]": ("help", "acestep-parity freeze --help"),
    "acestep-parity spread": ("help", "acestep-parity spread --help"),
    "acestep-parity import-cases SRC --out DIR": ("help", "acestep-parity import-cases --help"),
    "acestep-parity generate --case cases/text2music_01.json --out out.wav": ("run", None),
    "acestep-export --checkpoint-dir DIR --out onnx/": ("help", "acestep-export --help"),
    "acestep-export --profile fp16 --from .cache/artifacts/synth-tiny-*/fp32 --out onnx-fp16/":
        ("help", "acestep-export --help && ls -d .cache/artifacts/synth-tiny-*/fp32"),
    "pytest --backend py_ort --profile fp16 -k text2music_01": ("co", None),
    "acestep-ort generate --case cases/text2music_01.json --out out.wav --dump caps.npz": ("run", None),
    # cargo run would build into CARGO_TARGET_DIR: the built binary runs the same arguments
    "cargo run --release --bin generate -- --case cases/text2music_01.json --out out.wav":
        ("rust", "--case cases/text2music_01.json --out out.wav"),
    "pytest --benchmark-only": ("co", None),
    "pytest --benchmark-only -k text2music_01": ("co", None),
    "python examples/ffi/python/acestep_ffi.py --onnx-dir .cache/artifacts/synth-tiny-*/fp32 --case "
    "cases/text2music_01.json --out out.wav": ("run", None),
    "pytest --benchmark-only -m long -k scaling": ("co", None),
    "pytest --benchmark-only -m long -k long_song": ("co", None),
    # docs/realsize.md: the full model (hours of work on 2 cores: their options are checked)
    "make realsize CHECKPOINT=/path/to/checkpoints": ("dry", f"make -n realsize CHECKPOINT={CKPT}"),
    "acestep-parity check-checkpoint /path/to/checkpoints": ("run", None),
    "acestep-export --checkpoint-dir /path/to/checkpoints --out /path/to/onnx --validate":
        ("help", "acestep-export --help"),
    "python scripts/realsize_timing.py --checkpoint-dir /path/to/checkpoints --seconds 30":
        ("help", "python scripts/realsize_timing.py --help"),
    # docs/realsize.md: the real-checkpoint walkthrough (its export and freeze take minutes; their options are checked)
    "acestep-export --checkpoint-dir /path/to/checkpoints --validate": ("help", "acestep-export --help"),
    "acestep-parity freeze --checkpoint-dir /path/to/checkpoints --case text2music_02 --case simple_mode_01":
        ("help", "acestep-parity freeze --help"),
    "pytest tests/test_parity.py tests/test_lm.py --checkpoint-dir /path/to/checkpoints --case text2music_02 "
    "--case simple_mode_01": ("co", None),
    "acestep-ort generate --case cases/text2music_02.json --onnx-dir .cache/artifacts/acestep-v15-turbo-*/fp32 "
    "--out song.wav": ("help", "acestep-ort generate --help"),
    "cargo run --release --bin generate -- --case cases/simple_mode_01.json --onnx-dir "
    ".cache/artifacts/acestep-v15-turbo-*/fp32 --out plan.wav": ("rust", "--help"),
    # docs/parity_ops.md: running the suite
    ".venv/bin/pytest": ("co", None),
    '.venv/bin/pytest -k "dit and step"': ("co", None),
    ".venv/bin/pytest -k text2music_03": ("co", None),
    ".venv/bin/pytest --backend py_ort --case 'text2music_0*'": ("co", None),
    ".venv/bin/pytest --checkpoint-dir ~/ACE-Step-1.5/checkpoints": ("co", None),
    ".venv/bin/pytest -n 2": ("co", None),
    '.venv/bin/pytest -k "py_ort and torch"': ("co", None),
    ".venv/bin/pytest -k golden": ("co", None),
    ".venv/bin/pytest --cases-dir /path/to/my_cases/": ("co", None),
    # docs/onnx_quantization.md: profiles
    "acestep-export --profile fp16 --from .cache/artifacts/synth-tiny-*/fp32 --out out/fp16":
        ("help", "acestep-export --help && ls -d .cache/artifacts/synth-tiny-*/fp32"),
    "acestep-export --profile int8_dynamic --out out/int8": ("help", "acestep-export --help"),
    "python -m acestep_parity.exporters.profiles.evaluate out/fp16":
        ("dry", "python -c 'import acestep_parity.exporters.profiles.evaluate'"),
    "pytest --backend py_ort --backend rust --profile int8_dynamic -k text2music_01": ("co", None),
    "pytest tests/test_profiles.py": ("co", None),
    # docs/python_ort_runtime.md: install and run
    "pip install runtimes/py_ort": ("pip", None),
    "pip install 'runtimes/py_ort[mp3]'": ("pip", None),
    "python -m build --wheel runtimes/py_ort": ("help", "python -m build --help"),
    "acestep-export --checkpoint-dir CKPT --out onnx/": ("help", "acestep-export --help"),
    # onnx/ is the folder the line above writes (an export: minutes); its options are checked, the next line runs
    "acestep-ort generate --case cases/text2music_01.json --onnx-dir onnx/ --out out.wav --dump caps.npz":
        ("help", "acestep-ort generate --help"),
    "acestep-ort generate --case cases/text2music_01.json --onnx-dir .cache/artifacts/synth-tiny-*/fp32 --out out.wav":
        ("run", None),
}


def _env() -> dict[str, str]:
    """The venv's bin first on PATH (what activate does), the export make run cached, no color."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "VIRTUAL_ENV": str(Path(sys.executable).parent.parent), "NO_COLOR": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def _shell(command: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=TIMEOUT)


def _sandbox(tmp_path: Path) -> Path:
    """A folder whose entries link to the repository's: a command's new files land here, not in the clone."""
    box = tmp_path / "clone"
    box.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in ("out", ".pytest_cache", "reports"):
            (box / entry.name).symlink_to(entry)
    return box


def _options(command: str) -> list[str]:
    return sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command)))


def test_every_command_is_classified():
    """A README / marked docs line that is not in COMMANDS fails here (say how it is checked); so does a stale
    COMMANDS entry that no document has any more."""
    assert LINES, "no command line found in README.md"
    typed = {line.command for line in LINES}
    unknown = [f"{line.file}:{line.lineno}: {line.command}" for line in LINES if line.command not in COMMANDS]
    assert not unknown, "unclassified command lines (add them to COMMANDS):\n" + "\n".join(unknown)
    stale = sorted(set(COMMANDS) - typed)
    assert not stale, f"COMMANDS entries no document has: {stale}"
    for file in DOCS:
        assert any(line.file == file for line in LINES), f"{file}: no block after {MARKER}"


def test_comment_and_option_parsing():
    """The extraction itself: a comment after whitespace goes, one inside quotes or a word stays."""
    assert strip_comment("pytest -k 'a #b'   # one case") == "pytest -k 'a #b'"
    assert strip_comment("make run     # set up") == "make run"
    assert strip_comment("echo a#b") == "echo a#b"
    assert _options("acestep-export --profile fp16 --from x --out-dir y -k") == ["--from", "--out-dir", "--profile"]


@pytest.mark.parametrize("line", LINES, ids=[line.id for line in LINES])
def test_readme_command(line: Line, onnx_artifacts, tmp_path: Path, record_property):
    """The line works as typed after make run (checked as its COMMANDS kind says)."""
    if line.command not in COMMANDS:
        pytest.fail(f"{line.file}:{line.lineno}: unclassified command {line.command!r} (add it to COMMANDS)")
    kind, check = COMMANDS[line.command]
    command = line.command
    for placeholder, folder in ALT.items():
        command = command.replace(placeholder, folder)
    record_property("command", line.command)
    record_property("kind", kind)
    if ".cache/" in command and paths.cache_dir().resolve() != (ROOT / ".cache").resolve():
        pytest.skip(f"the cache is {paths.cache_dir()} ($ACESTEP_PARITY_CACHE), not the .cache/ this line names")
    if kind == "venv":
        activate = Path(sys.executable).parent / "activate"
        assert activate.is_file(), f"{activate} missing: the tests do not run in a venv"
        record_property("exit_code", 0)
        return
    if kind == "pip":
        for arg in shlex.split(command)[2:]:
            folder, _, extras = arg.partition("[")
            text = (ROOT / folder / "pyproject.toml").read_text(encoding="utf-8")
            name = re.search(r'^name = "([^"]+)"', text, re.M).group(1)
            declared = set(metadata.metadata(name).get_all("Provides-Extra") or [])
            missing = set(filter(None, extras.rstrip("]").split(","))) - declared
            assert not missing, f"{arg}: extras {sorted(missing)} not in {folder}/pyproject.toml ({sorted(declared)})"
        record_property("exit_code", 0)
        return
    cwd, env = ROOT, _env()
    if kind == "co":
        command = f"{command} --co -q -p no:cacheprovider"
    elif kind in ("help", "dry"):
        command = check
    elif kind == "rust":
        from acestep_parity.backends.rust import find_binary, rust_env

        binary, env = find_binary(), {**rust_env(), **env}
        if binary is None:
            pytest.skip("the Rust runtime is not built (make rust)")
        command, cwd = f"{shlex.quote(str(binary))} {check}", _sandbox(tmp_path)
    else:
        cwd = _sandbox(tmp_path)
    proc = _shell(command, cwd, env)
    record_property("exit_code", proc.returncode)
    record_property("ran", command)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, f"{line.file}:{line.lineno}: `{command}` exited {proc.returncode}:\n{tail}"
    if kind == "help":
        missing = [opt for opt in _options(line.command) if opt not in proc.stdout]
        assert not missing, f"{line.file}:{line.lineno}: {missing} not in `{check}`:\n{proc.stdout[-2000:]}"
