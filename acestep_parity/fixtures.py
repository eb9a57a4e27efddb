"""The plugin's fixtures and the session state behind them.

``ParitySession`` (one per pytest run, in ``config.stash``) holds the selected cases, the checkpoint, the
tolerances, the golden store and the backends, so a backend's runs are made once and shared by every test that
compares them. The fixtures hand a test its candidate (``backend``), its reference (``reference``: a live run or
the golden) and ``check``, which gates through ``cases/tolerances.json`` and records the measured values for the
reports (``acestep_parity/reporter.py``). Registered by ``acestep_parity/plugin.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from acestep_ort.host.case import Case, InvalidCase, discover_cases
from acestep_parity import parity, paths
from acestep_parity.backends import REGISTRY, Backend, BackendContext
from acestep_parity.golden import GoldenError, GoldenMissing, GoldenStore, freeze_command
from acestep_parity.parametrize import Pair
from acestep_parity.tolerances import Tolerances

# user property holding a test's parity rows (JSON), read by the reporter on the controller (xdist included)
ROWS_PROPERTY = "parity_rows"
SESSION_KEY = pytest.StashKey["ParitySession"]()
# a failing check's (tensor, reference, candidate, rows): the plugin's makereport hook draws it into the report
PLOT_KEY = pytest.StashKey[list]()


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

            # an explicit folder was checked by open_session
            directory = paths.resolve_checkpoint_dir(self.config.getoption("--checkpoint-dir"), check=False)
            hashes = file_hashes(directory)
            self._checkpoint = (directory, hashes, checkpoint_id(directory, hashes))
        return self._checkpoint

    @property
    def golden(self) -> GoldenStore:
        directory, hashes, cid = self.checkpoint
        explicit = self.config.getoption("--checkpoint-dir")
        root = Path(self.config.getoption("--golden-dir"))
        return GoldenStore(root / cid, cid, hashes, directory if explicit else None)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The tolerance-override scopes of this run's checkpoint (``full_depth`` at upstream's depth)."""
        from acestep_parity.checkpoint import TEXT_DIR, read_json
        from acestep_parity.tolerances import checkpoint_scopes

        return checkpoint_scopes(read_json(self.checkpoint[0] / TEXT_DIR / "config.json"))

    @property
    def isolate(self) -> bool:
        """``--isolate`` (default: a checkpoint of 4 GiB and more): every backend runs in a child process."""
        option = self.config.getoption("--isolate")
        if option is None:
            from acestep_parity.backends.isolated import ISOLATE_FROM_BYTES
            from acestep_parity.exporters.export import checkpoint_bytes

            option = checkpoint_bytes(self.checkpoint[0]) >= ISOLATE_FROM_BYTES
        return bool(option)

    def backend(self, name: str, profile: str) -> Backend:
        key = (name, profile)
        if key not in self.backends:
            directory, _, cid = self.checkpoint
            ctx = BackendContext(directory, cid, profile, paths.cache_dir())
            if self.isolate:
                from acestep_parity.backends.isolated import IsolatedBackend

                self.backends[key] = IsolatedBackend(REGISTRY[name], ctx, self.isolated_plan)
            else:
                self.backends[key] = REGISTRY[name](ctx)
        return self.backends[key]

    def isolated_plan(self, backend: Backend) -> tuple[list[Case], list[dict], list[tuple]]:
        """Everything an isolated backend will be asked for in this session: the selected cases, the teacher-
        forced DiT inputs of its references (the golden, and the runs of its live references, made first) and the
        golden planner streams of the simple-mode cases."""
        from acestep_parity.backends.isolated import DIT_TEACHER_KEYS, digest
        from acestep_parity.checkpoint import has_lm
        from acestep_parity.parametrize import selected_pairs

        lm = has_lm(self.checkpoint[0])
        cases = [c for c in self.cases if isinstance(c, Case)
                 and (c.task == "text2music" or (c.task == "simple_mode" and lm))]
        pairs = [p for p in selected_pairs(self.config) if p.candidate == backend.name]
        profile = backend.ctx.profile
        store = self.golden
        dit_refs, lm_inputs, seen = [], [], set()
        for case in cases:
            refs = []
            golden = None
            if store.exists():
                try:
                    golden = store.load(case.id, case.sha256, planner=planner_record(self, case))
                except GoldenError:
                    golden = None
            if golden is not None and any(not p.live for p in pairs):
                refs.append(golden)
            for p in pairs:
                if p.live:
                    other = self.backend(p.reference, profile if p.reference != "torch" else "fp32")
                    if other.availability().ok:
                        refs.append(other.run_case(case).arrays)
            for ref in refs:
                if all(k in ref for k in DIT_TEACHER_KEYS):
                    key = digest(*(ref[k] for k in DIT_TEACHER_KEYS))
                    if key not in seen:
                        seen.add(key)
                        dit_refs.append(ref)
            if case.task == "simple_mode" and golden is not None and "lm_tokens" in golden:
                lm_inputs.append((golden["lm_prompt_ids"], golden["lm_tokens"]))
        return cases, dit_refs, lm_inputs


def plugin_active(config: pytest.Config) -> bool:
    """The plugin acts only on this repository's runs (pytest's rootdir holds ``cases/tolerances.json``) or where
    ``--cases-dir`` is given: installed into an environment, it leaves every other project's pytest run untouched
    (its options exist, nothing is collected, parametrized or reported)."""
    explicit_cases = config.getoption("--cases-dir") != str(paths.CASES_DIR)
    return explicit_cases or paths.is_repo_root(config.rootpath)


def open_session(config: pytest.Config) -> ParitySession:
    """The run's session: a wrong ``--checkpoint-dir`` is one usage error, not one setup traceback per test."""
    explicit = config.getoption("--checkpoint-dir")
    if explicit:
        from acestep_parity.checkpoint import CheckpointError
        from acestep_parity.checkpoint_check import require_checkpoint

        try:
            require_checkpoint(Path(explicit).expanduser().resolve())
        except CheckpointError as exc:
            raise pytest.UsageError(f"--checkpoint-dir: {exc}") from None
    cases = discover_cases(Path(config.getoption("--cases-dir")), config.getoption("case_globs"))
    session = ParitySession(config=config, cases=cases, tolerances=Tolerances.load(paths.TOLERANCE_FILE))
    config.stash[SESSION_KEY] = session
    return session


def session_of(config: pytest.Config) -> ParitySession:
    """The run's session; outside this repository (no session was opened) a usage error saying why."""
    if SESSION_KEY not in config.stash:
        raise pytest.UsageError(f"acestep-parity: {config.rootpath} is not an acestep-parity checkout (no "
                                "cases/tolerances.json); run pytest in the repository or pass --cases-dir")
    return config.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def parity_session(pytestconfig: pytest.Config) -> ParitySession:
    """The run's session: backends and their runs shared by every test (and every test file's helpers)."""
    return session_of(pytestconfig)


@pytest.fixture(scope="session")
def checkpoint_dir(parity_session: ParitySession) -> Path:
    """The checkpoint folder under test (``--checkpoint-dir``, or the synthetic one, generated on first use)."""
    return parity_session.checkpoint[0]


@pytest.fixture(scope="session")
def tolerances(parity_session: ParitySession) -> Tolerances:
    """The gates of ``cases/tolerances.json``: the only place a gate lives."""
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
    """The session's backend ``name`` at ``profile``; skips naming its ``role`` and the reason where it cannot
    run here (a skip is never a pass)."""
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
    """The checkpoint's golden store; with ``--update-golden`` the selected cases are re-frozen first (under a
    file lock, so pytest-xdist workers freeze once)."""
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
def check(request: pytest.FixtureRequest, record_property, tolerances: Tolerances, parity_session: ParitySession):
    """``check(ref, cand, tensor=…, pair=…, profile=…, case=…, step=None, mode=None)``: gate and record (with the
    checkpoint's override scopes: ``full_depth`` at upstream's depth)."""
    scopes = parity_session.scopes

    def _check(ref, cand, *, tensor: str, pair: str, profile: str, case: Case, step: int | None = None,
               mode: str | None = None, gate_tensor: str | None = None,
               gate_pair: str | None = None) -> list[parity.Row]:
        gates = tolerances.gates(gate_pair or pair, profile, gate_tensor or tensor, case.id, scopes=scopes)
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
            request.node.stash[PLOT_KEY] = [tensor, np.asarray(ref), np.asarray(cand), rows]
            raise parity.ParityFailure(parity.failure_message(rows, gates))
        return rows

    return _check
