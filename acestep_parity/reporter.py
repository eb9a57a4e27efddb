"""The reports of a parity run: rows collected from every test (xdist workers' reports included), written as
metrics.json / metrics.csv at the end, summarised in the terminal and the HTML report beside the machines, and a
failing check's plot attached to its test's report. Also the benchmark ratio table (py_ort / torch time).

The plugin (``acestep_parity/plugin.py``) registers one ``ParityReporter`` on the controller.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from acestep_parity import parity
from acestep_parity.fixtures import PLOT_KEY, ROWS_PROPERTY, session_of

# tests/test_benchmarks.py stores {(stage, backend): mean seconds} here; the terminal summary prints ratios, in
# the one convention of every benchmark figure here: candidate time / torch time (< 1: the candidate is faster).
BENCHMARK_RESULTS = pytest.StashKey[dict]()
BENCHMARK_STAGES = ("text_encoder", "condition_encoder", "dit_decoder", "vae_decoder", "end_to_end")


def benchmark_ratio_lines(bench: Mapping[tuple[str, str], float]) -> list[str]:
    """The py_ort / torch table of ``BENCHMARK_RESULTS``: one line per stage both measured, then peak RSS."""
    if not bench:
        return []
    lines = ["py_ort / torch (mean time ratio; < 1 means py_ort is faster):"]
    for stage in BENCHMARK_STAGES:
        torch_s, ort_s = bench.get((stage, "torch")), bench.get((stage, "py_ort"))
        if torch_s and ort_s:
            lines.append(f"  {stage:18s} torch {torch_s * 1e3:9.2f} ms  py_ort {ort_s * 1e3:9.2f} ms  "
                         f"ratio {ort_s / torch_s:6.3g}x")
    for name in ("torch", "py_ort"):
        if ("peak_rss_mb", name) in bench:
            lines.append(f"  peak RSS of a one-case process, {name}: {bench[('peak_rss_mb', name)]:.0f} MiB")
    return lines


def attach_failure_plot(item: pytest.Item, report: pytest.TestReport) -> None:
    """A failed check's reference-vs-candidate plot, as a pytest-html extra of its report (a plot must never
    hide the verdict: a drawing error becomes a report section)."""
    if not report.failed or PLOT_KEY not in item.stash:
        return
    tensor, ref, cand, rows = item.stash[PLOT_KEY]
    try:
        from acestep_parity import reports

        extras = getattr(report, "extras", [])
        extras.extend(reports.failure_extras(tensor, ref, cand, rows))
        report.extras = extras
    except Exception as exc:  # a plot must never hide the verdict
        report.sections.append(("parity plot", f"could not draw plot: {exc}"))


def shorten_parity_failure(item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport) -> None:
    """A failed gate (``parity.ParityFailure``) reads as a few lines: the check's message, the mode, the worst
    element and the test line (``reports.failure_text``), not pytest's long traceback through the ``check``
    fixture with the reprs of every fixture and array. An explicit ``--tb`` (other than auto) keeps pytest's."""
    if not report.failed or call.excinfo is None or not call.excinfo.errisinstance(parity.ParityFailure):
        return
    if item.config.getoption("tbstyle", "auto") != "auto":
        return
    try:
        from acestep_parity import reports

        rows = ref = cand = None
        if PLOT_KEY in item.stash:
            _tensor, ref, cand, rows = item.stash[PLOT_KEY]
        test_path = getattr(item, "path", None)
        frames = [e for e in call.excinfo.traceback if test_path is not None and e.path == test_path]
        rel = item.location[0]
        location = f"{rel}:{frames[-1].lineno + 1}" if frames else f"{rel}::{item.name}"
        report.longrepr = reports.failure_text(str(call.excinfo.value), rows, ref, cand, location)
    except Exception as exc:  # the short form must never hide the verdict: keep pytest's traceback
        report.sections.append(("parity failure", f"could not shorten the failure: {exc}"))


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
                frozen = session_of(self.config).golden.frozen_on()
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
        for line in benchmark_ratio_lines(config.stash.get(BENCHMARK_RESULTS, {})):
            terminalreporter.write_line(line)
        if self.rows:
            from acestep_parity import reports

            for line in reports.summary_lines(self.rows, self.provenance()):
                terminalreporter.write_line(line)
