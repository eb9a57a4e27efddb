"""The pytest plugin's hooks, registered through the ``pytest11`` entry point (``pyproject.toml``).

Loaded as an entry point, its options are known before pytest reads the command line (``--parity-report DIR``
with a space works). The rest lives beside it, split as pytest-regressions splits its plugin:

- ``acestep_parity/fixtures.py``: ``ParitySession`` and the fixtures (``parity_session``, ``backend``,
  ``reference``, ``golden``, ``check``, …), imported here because pytest looks for a plugin's fixtures in the
  plugin module itself (the same import works installed and in the checkout);
- ``acestep_parity/parametrize.py``: the pairs and the pair x profile x case [x step] [x tensor] [x mode] axes;
- ``acestep_parity/reporter.py``: the metrics reports, summaries and failure plots.

Parity tests ask for ``pair`` (candidate backend ~ reference), ``backend`` (the candidate), ``reference`` (the
reference captures: a live backend run in this session or the frozen golden), ``check`` and the parametrized
``step``/``tensor``/``mode``; they never special-case a backend. Every gate comes from ``cases/tolerances.json``.
"""

from __future__ import annotations

import argparse

import pytest

from acestep_parity import paths
from acestep_parity.backends import BACKEND_NAMES, PROFILES
from acestep_parity.fixtures import (
    SESSION_KEY,
    available_backend,
    backend,
    backend_name,
    check,
    checkpoint_dir,
    golden,
    golden_store,
    open_session,
    parity_session,
    planner_record,
    plugin_active,
    reference,
    runnable_case,
    session_of,
    tolerances,
)
from acestep_parity.parametrize import parity_parametrize
from acestep_parity.reporter import ParityReporter, attach_failure_plot, shorten_parity_failure

# The fixtures pytest registers from this module (and the helpers test files may import from here).
__all__ = [
    "available_backend", "backend", "backend_name", "check", "checkpoint_dir", "golden", "golden_store",
    "parity_session", "planner_record", "reference", "runnable_case", "tolerances",
    "pytest_addoption", "pytest_configure", "pytest_generate_tests", "pytest_runtest_makereport",
]


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
    group.addoption("--isolate", action=argparse.BooleanOptionalAction, default=None,
                    help="run each backend's work in a child process, one at a time (default: for checkpoints of "
                         "4 GiB and more, so a full-size model is never loaded twice; docs/realsize.md)")
    group.addoption("--parity-report", default="reports", metavar="DIR",
                    help="folder for metrics.json / metrics.csv and plots ('' to disable; default: reports)")


def pytest_configure(config: pytest.Config) -> None:
    """Outside this repository (and without ``--cases-dir``) the plugin stays inert: see ``plugin_active``."""
    if not plugin_active(config):
        return
    config.addinivalue_line("markers", "parity: a parity test that compares a backend against a reference")
    config.addinivalue_line("markers", "slow: slow test, not part of the default run (select with -m slow)")
    open_session(config)
    if not hasattr(config, "workerinput"):  # the xdist controller (or a plain run) writes the reports
        config.pluginmanager.register(ParityReporter(config), "acestep-parity-reporter")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that asks for ``case`` (``acestep_parity/parametrize.py``)."""
    if "case" not in metafunc.fixturenames or SESSION_KEY not in metafunc.config.stash:
        return
    config = metafunc.config
    session = session_of(config)
    if not session.cases:
        raise pytest.UsageError(f"--case {config.getoption('case_globs')} matched no case in "
                                f"{config.getoption('--cases-dir')}")
    parity_parametrize(metafunc, session.cases)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    if call.when == "call":
        report = outcome.get_result()
        shorten_parity_failure(item, call, report)
        attach_failure_plot(item, report)
