"""The pytest plugin: options, backend fixtures, case x step x tensor parametrization, recorded metrics, reports.

Registered through the ``pytest11`` entry point (``pyproject.toml``), so its options are known before pytest
reads the command line (``--parity-report DIR`` with a space works). Parity tests ask for ``pair`` (candidate
backend ~ reference), ``backend`` (the candidate), ``reference`` (the reference captures: a live backend run in
this session or the frozen golden), ``check`` and the parametrized ``step``/``tensor``/``mode``; they never
special-case a backend. Every gate comes from ``cases/tolerances.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from acestep_ort.host.case import Case, InvalidCase, discover_cases
from acestep_ort.host.schedule import resolve_schedule
from acestep_parity import parity, paths
from acestep_parity.backends import BACKEND_NAMES, PROFILES, REGISTRY, Backend, BackendContext
from acestep_parity.golden import GoldenError, GoldenMissing, GoldenStore, freeze_command
from acestep_parity.tolerances import Tolerances

GOLDEN = "golden"
# candidate~reference. Live pairs (plan §14.1's 3-way matrix, plus the DLL host) compare two runs made in this
# session on this machine; golden pairs compare with the frozen reference (possibly from another CPU).
LIVE_PAIRS = (("py_ort", "torch"), ("rust", "py_ort"), ("rust", "torch"), ("dll", "py_ort"), ("dll", "torch"))
GOLDEN_PAIRS = tuple((name, GOLDEN) for name in BACKEND_NAMES)
STAGE_TENSORS = (
    "text_token_ids", "text_attention_mask", "lyric_token_ids", "lyric_attention_mask", "text_hidden_states",
    "lyric_hidden_states", "encoder_hidden_states", "encoder_attention_mask", "context_latents", "schedule",
    "noise", "pred_latents",
)
ROWS_PROPERTY = "parity_rows"
_SESSION_KEY = pytest.StashKey["ParitySession"]()
_PLOT_KEY = pytest.StashKey[list]()
# tests/test_benchmarks.py stores {(stage, backend): mean seconds} here; the terminal summary prints ratios.
BENCHMARK_RESULTS = pytest.StashKey[dict]()
BENCHMARK_STAGES = ("text_encoder", "condition_encoder", "dit_decoder", "vae_decoder", "end_to_end")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("acestep-parity", "ACE-Step parity")
    group.addoption("--backend", action="append", choices=BACKEND_NAMES,
                    help="backend(s) to test, repeatable (default: all; unavailable ones skip with a reason)")
    group.addoption("--profile", action="append", choices=PROFILES, help="ONNX profile(s), repeatable (default fp32)")
    group.addoption("--case", action="append", dest="case_globs", metavar="GLOB",
                    help="case id or glob, repeatable (default: every case in the cases folder)")
    group.addoption("--cases-dir", default=str(paths.CASES_DIR), metavar="DIR",
                    help="folder of case JSON files (default: cases/ in the repository)")
    group.addoption("--checkpoint-dir", default=None,
                    help="checkpoint folder in the upstream layout (default: $ACESTEP_CHECKPOINT_DIR or the "
                         "tiny synthetic checkpoint, generated and cached on first use)")
    group.addoption("--golden-dir", default=str(paths.GOLDEN_DIR), metavar="DIR",
                    help="root of the golden store (default: golden/ in the repository)")
    group.addoption("--update-golden", action="store_true",
                    help="re-freeze the golden of the selected cases with the PyTorch reference before comparing")
    group.addoption("--parity-report", default="reports", metavar="DIR",
                    help="folder for metrics.json / metrics.csv and plots ('' to disable; default: reports)")


@dataclass
class ParitySession:
    """Session-wide state: selected cases, checkpoint, tolerances, golden store, backends, collected rows."""

    config: pytest.Config
    cases: list[Case]
    tolerances: Tolerances
    _checkpoint: tuple[Path, dict, str] | None = None
    backends: dict[tuple[str, str], Backend] = field(default_factory=dict)

    @property
    def checkpoint(self) -> tuple[Path, dict, str]:
        if self._checkpoint is None:
            from acestep_parity.checkpoint import checkpoint_id, file_hashes

            directory = paths.resolve_checkpoint_dir(self.config.getoption("--checkpoint-dir"))
            hashes = file_hashes(directory)
            self._checkpoint = (directory, hashes, checkpoint_id(directory, hashes))
        return self._checkpoint

    @property
    def golden(self) -> GoldenStore:
        directory, hashes, cid = self.checkpoint
        explicit = self.config.getoption("--checkpoint-dir")
        root = Path(self.config.getoption("--golden-dir"))
        return GoldenStore(root / cid, cid, hashes, directory if explicit else None)

    def backend(self, name: str, profile: str) -> Backend:
        key = (name, profile)
        if key not in self.backends:
            directory, _, cid = self.checkpoint
            ctx = BackendContext(directory, cid, profile, paths.cache_dir())
            self.backends[key] = REGISTRY[name](ctx)
        return self.backends[key]


def plugin_active(config: pytest.Config) -> bool:
    """The plugin acts only on this repository's runs (pytest's rootdir holds ``cases/tolerances.json``) or where
    ``--cases-dir`` is given: installed into an environment, it leaves every other project's pytest run untouched
    (its options exist, nothing is collected, parametrized or reported)."""
    explicit_cases = config.getoption("--cases-dir") != str(paths.CASES_DIR)
    return explicit_cases or paths.is_repo_root(config.rootpath)


def pytest_configure(config: pytest.Config) -> None:
    if not plugin_active(config):
        return
    config.addinivalue_line("markers", "parity: a parity test that compares a backend against a reference")
    config.addinivalue_line("markers", "slow: slow test, not part of the default run (select with -m slow)")
    explicit = config.getoption("--checkpoint-dir")
    if explicit:  # a wrong folder is one usage error, not one setup traceback per test
        from acestep_parity.checkpoint import CheckpointError, check_layout

        try:
            check_layout(Path(explicit).expanduser())
        except CheckpointError as exc:
            raise pytest.UsageError(f"--checkpoint-dir: {exc}") from None
    cases = discover_cases(Path(config.getoption("--cases-dir")), config.getoption("case_globs"))
    config.stash[_SESSION_KEY] = ParitySession(config=config, cases=cases,
                                               tolerances=Tolerances.load(paths.TOLERANCE_FILE))
    if not hasattr(config, "workerinput"):  # the xdist controller (or a plain run) writes the reports
        config.pluginmanager.register(ParityReporter(config), "acestep-parity-reporter")


def _session(config: pytest.Config) -> ParitySession:
    if _SESSION_KEY not in config.stash:
        raise pytest.UsageError(f"acestep-parity: {config.rootpath} is not an acestep-parity checkout (no "
                                "cases/tolerances.json); run pytest in the repository or pass --cases-dir")
    return config.stash[_SESSION_KEY]


@dataclass(frozen=True)
class Pair:
    """One comparison: ``candidate`` backend against ``reference`` (a backend run live, or the golden)."""

    candidate: str
    reference: str

    @property
    def name(self) -> str:
        return f"{self.candidate}~{self.reference}"

    @property
    def live(self) -> bool:
        return self.reference != GOLDEN


def selected_pairs(config: pytest.Config) -> list[Pair]:
    """Every pair whose candidate is a selected backend (``--backend``; default all), golden pairs first."""
    chosen = config.getoption("--backend") or list(BACKEND_NAMES)
    return [Pair(c, r) for c, r in GOLDEN_PAIRS + LIVE_PAIRS if c in chosen]


def _case_steps(case: Case) -> int:
    return len(resolve_schedule(case.shift, list(case.timesteps) if case.timesteps else None))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize by backend x profile x case [x step] [x tensor] [x mode], ids readable under ``-k``."""
    names = metafunc.fixturenames
    if "case" not in names or _SESSION_KEY not in metafunc.config.stash:
        return
    config = metafunc.config
    session = _session(config)
    if not session.cases:
        raise pytest.UsageError(f"--case {config.getoption('case_globs')} matched no case in "
                                f"{config.getoption('--cases-dir')}")
    axes: list[tuple[str, list, list[str]]] = []
    if "pair" in names:
        pairs = selected_pairs(config)
        axes.append(("pair", pairs, [p.name for p in pairs]))
    elif "backend_name" in names:
        backends = config.getoption("--backend") or list(BACKEND_NAMES)
        axes.append(("backend_name", backends, backends))
    if "profile" in names:
        profiles = config.getoption("--profile") or ["fp32"]
        axes.append(("profile", profiles, profiles))
    combos: list[tuple[list, list[str]]] = [([], [])]
    for _, values, ids in axes:
        combos = [(vals + [v], idl + [i]) for vals, idl in combos for v, i in zip(values, ids, strict=True)]
    argnames = [a[0] for a in axes] + ["case"]
    extra = [n for n in ("step", "tensor", "mode") if n in names]
    argnames += extra
    tensors = metafunc.definition.get_closest_marker("tensors")
    # Items of one case share a pytest-xdist worker (its backend runs are cached there); a test function that
    # names its own group (e.g. one expensive session fixture for all cases) keeps all its items together.
    own_group = metafunc.definition.get_closest_marker("xdist_group")
    group = own_group.args[0] if own_group and own_group.args else None
    modes = metafunc.definition.get_closest_marker("modes")
    params = []
    for vals, idl in combos:
        for case in session.cases:
            # A case whose task cannot run yet gets one (skipping) test per function, not one per step/tensor.
            expand = case.task in ("text2music", "simple_mode")
            steps = (range(_case_steps(case)) if expand else [0]) if "step" in extra else [None]
            tensor_axis = (tensors.args if expand else tensors.args[:1]) if tensors and "tensor" in extra else [None]
            mode_axis = (modes.args if expand else modes.args[:1]) if modes and "mode" in extra else [None]
            for step in steps:
                for tensor in tensor_axis:
                    for mode in mode_axis:
                        if mode == "teacher" and tensor == "xt":
                            continue  # teacher forcing feeds the reference xt; only vt is compared
                        row = vals + [case] + [x for x, n in ((step, "step"), (tensor, "tensor"), (mode, "mode"))
                                               if n in extra]
                        pid = "-".join(idl + [case.id]
                                       + ([f"step{step}"] if "step" in extra else [])
                                       + ([tensor] if "tensor" in extra else [])
                                       + ([mode] if "mode" in extra else []))
                        params.append(pytest.param(*row, id=pid, marks=pytest.mark.xdist_group(group or case.id)))
    metafunc.parametrize(argnames, params)


@pytest.fixture(scope="session")
def parity_session(pytestconfig: pytest.Config) -> ParitySession:
    return _session(pytestconfig)


@pytest.fixture(scope="session")
def checkpoint_dir(parity_session: ParitySession) -> Path:
    return parity_session.checkpoint[0]


@pytest.fixture(scope="session")
def tolerances(parity_session: ParitySession) -> Tolerances:
    return parity_session.tolerances


@pytest.fixture
def runnable_case(case: Case | InvalidCase, parity_session: ParitySession) -> Case:
    """The case; a malformed case file fails its own items (file and field named); a case that needs a component
    the checkpoint lacks (simple mode: the 5 Hz LM) skips."""
    if isinstance(case, InvalidCase):
        pytest.fail(case.message, pytrace=False)
    if case.task == "simple_mode":
        from acestep_parity.checkpoint import has_lm

        if not has_lm(parity_session.checkpoint[0]):
            pytest.skip(f"{case.id}: simple_mode needs the 5 Hz LM planner, but {parity_session.checkpoint[0]} has "
                        "no acestep-5Hz-lm-0.6B/ folder (the synthetic generator writes one)")
    return case


def planner_record(parity_session: ParitySession, case: Case) -> dict | None:
    """The golden-manifest record of a simple-mode case's planner inputs (None for text2music)."""
    if case.task != "simple_mode":
        return None
    from acestep_ort.host.lm_planner import golden_planner_record
    from acestep_parity.checkpoint import lm_file_hashes

    return golden_planner_record(lm_file_hashes(parity_session.checkpoint[0]), case)


def available_backend(parity_session: ParitySession, name: str, profile: str, role: str,
                       case: Case | None = None) -> Backend:
    if name not in REGISTRY:
        pytest.skip(f"{role} backend {name} is not part of this checkout")
    instance = parity_session.backend(name, profile)
    availability = instance.availability()
    if not availability.ok:
        pytest.skip(f"{role} backend {name} ({profile}) unavailable: {availability.reason}")
    return instance


def _requested_case(request: pytest.FixtureRequest) -> Case | None:
    return request.getfixturevalue("case") if "case" in request.fixturenames else None


@pytest.fixture
def backend_name(request: pytest.FixtureRequest) -> str:
    """The candidate's name: from the ``pair`` axis in parity tests (tests without pairs parametrize it)."""
    return request.getfixturevalue("pair").candidate


@pytest.fixture
def backend(parity_session: ParitySession, backend_name: str, profile: str, request: pytest.FixtureRequest) -> Backend:
    """The backend under test; skips (never passes) when it cannot run here (or cannot run the case's task),
    saying why and how to build it."""
    return available_backend(parity_session, backend_name, profile, "candidate", _requested_case(request))


@pytest.fixture
def reference(parity_session: ParitySession, pair: Pair, profile: str, runnable_case: Case,
              request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    """The reference captures of the pair: a live run of the reference backend in this session (same machine)
    or the frozen golden. A live reference runs the same profile where it has it (torch is fp32 only)."""
    if not pair.live:
        return request.getfixturevalue("golden")
    ref_profile = profile if pair.reference != "torch" else "fp32"
    instance = available_backend(parity_session, pair.reference, ref_profile, "reference", runnable_case)
    return instance.run_case(runnable_case).arrays


@pytest.fixture(scope="session")
def golden_store(parity_session: ParitySession, pytestconfig: pytest.Config) -> GoldenStore:
    store = parity_session.golden
    if pytestconfig.getoption("--update-golden"):
        from acestep_parity.torch_ref import load_engine

        with paths.file_lock(store.root.parent / f".{store.checkpoint_id}.freeze.lock"):
            engine = load_engine(parity_session.checkpoint[0])
            for case in parity_session.cases:
                if case.task == "text2music":
                    store.write(case.id, case.sha256, engine.generate(case.request()).arrays)
                elif case.task == "simple_mode":
                    store.write(case.id, case.sha256, engine.generate_simple(case).arrays,
                                planner=planner_record(parity_session, case))
    return store


@pytest.fixture
def golden(golden_store: GoldenStore, runnable_case: Case, parity_session: ParitySession) -> dict[str, np.ndarray]:
    """The frozen reference captures of the case: skip when none exist, fail when stale."""
    if not golden_store.exists():
        pytest.skip(f"no golden for checkpoint {golden_store.checkpoint_id}: run "
                    f"`{freeze_command(golden_store.checkpoint_dir)}` (or pytest --update-golden)")
    try:
        return golden_store.load(runnable_case.id, runnable_case.sha256,
                                 planner=planner_record(parity_session, runnable_case))
    except GoldenMissing as exc:
        message, missing = str(exc), True
    except GoldenError as exc:
        message, missing = str(exc), False
    if missing:  # outside the except blocks, so the report shows the message once, not a chained traceback
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@pytest.fixture
def check(request: pytest.FixtureRequest, record_property, tolerances: Tolerances):
    """``check(ref, cand, tensor=…, pair=…, profile=…, case=…, step=None, mode=None)``: gate and record."""

    def _check(ref, cand, *, tensor: str, pair: str, profile: str, case: Case, step: int | None = None,
               mode: str | None = None, gate_tensor: str | None = None,
               gate_pair: str | None = None) -> list[parity.Row]:
        gates = tolerances.gates(gate_pair or pair, profile, gate_tensor or tensor, case.id)
        record_property("pair", pair)
        record_property("profile", profile)
        try:
            rows = parity.evaluate(ref, cand, gates, case=case.id, tensor=tensor, pair=pair, profile=profile,
                                   step=step, mode=mode)
        except parity.ParityFailure as exc:
            record_property("failure_tag", parity.TENSOR_STAGE.get(tensor, "DiT"))
            raise exc
        for row in rows:
            row.nodeid = request.node.nodeid
            record_property(f"{tensor}.{row.metric}", row.value)
            record_property(f"{tensor}.{row.metric}.gate", row.gate)
        record_property(ROWS_PROPERTY, parity.rows_to_json(rows))
        if any(r.verdict == "fail" for r in rows):
            record_property("failure_tag", rows[0].stage)
            request.node.stash[_PLOT_KEY] = [tensor, np.asarray(ref), np.asarray(cand), rows]
            raise parity.ParityFailure(parity.failure_message(rows, gates))
        return rows

    return _check


# --------------------------------------------------------------------------- reports


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not report.failed or _PLOT_KEY not in item.stash:
        return
    tensor, ref, cand, rows = item.stash[_PLOT_KEY]
    try:
        from acestep_parity import reports

        extras = getattr(report, "extras", [])
        extras.extend(reports.failure_extras(tensor, ref, cand, rows))
        report.extras = extras
    except Exception as exc:  # a plot must never hide the verdict
        report.sections.append(("parity plot", f"could not draw plot: {exc}"))


class ParityReporter:
    """Collects rows on the controller (xdist workers' reports included) and writes the reports at the end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.rows: list[parity.Row] = []
        self._provenance: list[str] | None = None

    def provenance(self) -> list[str]:
        """Where the golden was frozen, beside this machine (golden-pair verdicts are read against both)."""
        if self._provenance is None:
            from acestep_parity import machine

            try:
                import torch  # noqa: F401  (its ISA and thread facts, where the reference is installed)
            except ImportError:
                pass
            lines = [f"this machine: {machine.summary(machine.describe())}"]
            try:
                frozen = _session(self.config).golden.frozen_on()
            except Exception as exc:  # the report must not hide the verdicts
                frozen, lines = {}, lines + [f"golden provenance unavailable: {exc}"]
            by_machine: dict[str, list[str]] = {}
            for case_id, info in frozen.items():
                by_machine.setdefault(machine.summary(info), []).append(case_id)
            for text, cases in by_machine.items():
                lines.append(f"golden frozen on: {text} ({', '.join(cases)})")
            self._provenance = lines
        return self._provenance

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == ROWS_PROPERTY:
                self.rows.extend(parity.rows_from_json(value))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        target = self.config.getoption("--parity-report")
        if not target or not self.rows:
            return
        from acestep_parity import reports

        out = Path(target) if Path(target).is_absolute() else Path(self.config.rootpath) / target
        reports.write_metrics(out, self.rows)

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix, summary, postfix, session) -> None:
        if self.rows:
            from acestep_parity import reports

            prefix.extend(reports.summary_html(self.rows, self.provenance()))

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config) -> None:
        bench = config.stash.get(BENCHMARK_RESULTS, {})
        if bench:
            write = terminalreporter.write_line
            write("torch / py_ort (mean time ratio; > 1 means py_ort is faster):")
            for stage in BENCHMARK_STAGES:
                torch_s, ort_s = bench.get((stage, "torch")), bench.get((stage, "py_ort"))
                if torch_s and ort_s:
                    write(f"  {stage:18s} torch {torch_s * 1e3:9.2f} ms  py_ort {ort_s * 1e3:9.2f} ms  "
                          f"ratio {torch_s / ort_s:6.2f}x")
            for name in ("torch", "py_ort"):
                if ("peak_rss_mb", name) in bench:
                    write(f"  peak RSS of a one-case process, {name}: {bench[('peak_rss_mb', name)]:.0f} MiB")
        if self.rows:
            from acestep_parity import reports

            for line in reports.summary_lines(self.rows, self.provenance()):
                terminalreporter.write_line(line)


