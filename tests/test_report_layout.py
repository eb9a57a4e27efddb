"""The parity report's layout on synthetic rows (issue 20.7): a matrix with every pair x tensor column whose cells
hold a short number (details in the tooltip), failing cells marked, values and tests counted apart, summary
lines without stray separators, DiT and LM steps on separate axes, a failed gate told in a few lines."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from acestep_parity import reports
from acestep_parity.parity import TENSOR_STAGE, Row

LIVE, GOLDEN = "py_ort~torch", "rust~golden"
GATES = {"max_abs": ("max", 6e-5), "rmse": ("max", 1e-5), "mismatches": ("max", 0.0), "snr_db": ("min", 80.0),
         "pearson": ("min", 0.99999)}


def _row(tensor: str, metric: str, value: float, *, pair: str = LIVE, case: str = "text2music_01",
         step: int | None = None, mode: str | None = None, test: str | None = None) -> Row:
    direction, gate = GATES[metric]
    passes = value <= gate if direction == "max" else value >= gate
    nodeid = test or f"tests/test_x.py::t[{pair}-{case}-{tensor}-{step}-{mode}]"
    return Row(case=case, tensor=tensor, pair=pair, profile="fp32", metric=metric, value=value, gate=gate,
               direction=direction, verdict="pass" if passes else "fail", stage=TENSOR_STAGE.get(tensor, "DiT"),
               step=step, mode=mode, nodeid=nodeid)


def _all_rows() -> list[Row]:
    """Every matrix tensor for a live and a golden pair, DiT and LM steps, audio; within the gates."""
    rows = []
    for pair in (LIVE, GOLDEN):
        for tensor in reports.MATRIX_TENSORS:
            if tensor in ("vt", "xt"):
                for step in range(4):
                    for mode in ("teacher", "free"):
                        rows += [_row(tensor, "max_abs", 3.4e-6 * (step + 1), pair=pair, step=step, mode=mode),
                                 _row(tensor, "rmse", 4.1e-7, pair=pair, step=step, mode=mode)]
            elif tensor == "lm_topk_logits":
                rows += [_row(tensor, "max_abs", 2e-6 * (s + 1), pair=pair, step=s, mode="teacher") for s in range(5)]
            elif tensor.startswith("audio"):
                rows += [_row(tensor, "snr_db", 110.123, pair=pair), _row(tensor, "pearson", 0.99999987, pair=pair),
                         _row(tensor, "max_abs", 3.87e-6, pair=pair)]
            elif tensor.endswith(("ids", "mask", "digests", "tokens", "metadata")):
                rows.append(_row(tensor, "mismatches", 0.0, pair=pair))
            else:
                rows.append(_row(tensor, "max_abs", 1.234567e-6, pair=pair))
    return rows


class _Cells(HTMLParser):
    """The matrix table's cells: header titles, and per <td> its class, title and visible text."""

    def __init__(self):
        super().__init__()
        self.headers: list[str] = []
        self.shows: list[str] = []
        self.cells: list[dict] = []
        self._td: dict | None = None
        self._in_matrix = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("class") == "parity-matrix":
            self._in_matrix = True
        if not self._in_matrix:
            return
        if tag == "th" and a.get("title"):
            self.headers.append(a["title"].split(":")[0])
            self.shows.append(a["title"].split("cells show ")[-1])
        if tag == "td":
            self._td = {"class": a.get("class") or "", "title": a.get("title") or "", "text": "", "link": False}
        if tag == "a" and self._td is not None:
            self._td["link"] = True

    def handle_endtag(self, tag):
        if tag == "td" and self._td is not None:
            self.cells.append(self._td)
            self._td = None
        if tag == "table":
            self._in_matrix = False

    def handle_data(self, data):
        if self._td is not None:
            self._td["text"] += data


def _parse(rows: list[Row]) -> _Cells:
    parser = _Cells()
    parser.feed("".join(reports.matrix_html(rows)))
    return parser


def test_matrix_has_every_column_and_pair():
    rows = _all_rows()
    parsed = _parse(rows)
    assert parsed.headers == list(reports.MATRIX_TENSORS)  # audio and LM captures included, pipeline order
    html = "".join(reports.matrix_html(rows))
    for pair in (LIVE, GOLDEN):
        assert f"{pair} (fp32)" in html
    assert len(parsed.cells) == 2 * len(reports.MATRIX_TENSORS)
    # an unknown tensor still gets a column, after the known ones
    extra = _parse(rows + [_row("present_keys", "max_abs", 1e-7)])
    assert extra.headers[-1] == "present_keys"


def test_cells_are_short_numbers_with_details_in_the_title():
    parsed = _parse(_all_rows())
    for cell in parsed.cells:
        assert cell["text"] and len(cell["text"]) <= reports.CELL_CHARS, cell
        assert "≤" in cell["title"] or "≥" in cell["title"], cell  # metric against its gate
    vt = next(c for c in parsed.cells if c["title"].startswith(f"vt · {LIVE}"))
    assert vt["text"] == "1.4e-5"
    assert "max_abs 1.36e-05 ≤ 6e-05 (23% of the gate), worst at text2music_01 step 3 teacher" in vt["title"]
    assert "16 values in 8 tests, none over the gate" in vt["title"]  # two metrics per test
    # a column reads one metric: audio shows the max_abs (6 % of its gate used), not the SNR (3 %)
    assert parsed.shows[list(reports.MATRIX_TENSORS).index("audio")] == "max_abs"
    assert {c["text"] for c in parsed.cells if c["title"].startswith("audio ·")} == {"3.9e-6"}
    audio = next(c for c in parsed.cells if c["title"].startswith(f"audio · {LIVE}"))
    assert "snr_db 110.1 ≥ 80" in audio["title"] and "pearson 1-1.3e-07" in audio["title"]


@pytest.mark.parametrize("metric,value", [
    ("max_abs", 3.4e-6), ("max_abs", 1.23456789e-30), ("max_abs", 0.0123456), ("max_abs", 123456789.0),
    ("max_abs", 999.99), ("max_abs", float("nan")), ("max_abs", float("inf")), ("mismatches", 16.0),
    ("mismatches", 123456.0), ("snr_db", 110.1234), ("snr_db", float("inf")), ("snr_db", -3.2),
    ("pearson", 0.99999987), ("pearson", 1.0), ("pearson", 0.5123456), ("rmse", 0.0),
])
def test_short_value_fits_a_cell(metric, value):
    text = reports.short_value(_row("vt", metric, value))
    assert text and len(text) <= reports.CELL_CHARS, text


def test_short_value_examples():
    assert reports.short_value(_row("vt", "max_abs", 3.4e-6)) == "3.4e-6"
    assert reports.short_value(_row("vt", "mismatches", 16.0)) == "16"
    assert reports.short_value(_row("audio", "snr_db", 110.1234)) == "110 dB"
    assert reports.short_value(_row("audio", "pearson", 0.99999987)) == "1-1.3e-7"


def test_failing_cells_are_marked_and_linked():
    rows = _all_rows() + [_row("encoder_hidden_states", "max_abs", 1.4e-5 * 10, case="text2music_07")]
    parsed = _parse(rows)
    failing = [c for c in parsed.cells if "fail" in c["class"].split()]
    assert len(failing) == 1 and failing[0]["link"]
    assert failing[0]["title"].startswith(f"encoder_hidden_states · {LIVE}") and "FAIL" in failing[0]["title"]
    assert all(not c["link"] for c in parsed.cells if c is not failing[0])
    html = "".join(reports.matrix_html(rows))
    # (the expected numbers come from GATES: a gate literal in a test would trip test_framework's checker)
    assert "id='fail-0'" in html and f"text2music_07: max_abs = {1.4e-4:g} (gate {GATES['max_abs'][1]:g})" in html
    # colour by closeness: a value at 90 % of its gate is amber, one at 1 % pale
    states = {c["title"].split(" · ")[0]: c["class"] for c in _parse(
        [_row("vt", "max_abs", 5.4e-5), _row("xt", "max_abs", 6e-7)]).cells}
    assert states == {"vt": "near", "xt": "low"}


def test_counts_values_and_tests_apart():
    """16 failing values in 2 tests (one test checks 8 steps' worth of metrics): the summary says 16 values in
    2 tests, not '1 over the gate'."""
    rows = _all_rows()
    for test in ("tests/a.py::t[1]", "tests/a.py::t[2]"):
        rows += [_row("text_hidden_states", "rmse", 2e-5 + i * 1e-7, test=test) for i in range(8)]
    lines = reports.summary_lines(rows)
    total, failed = len(rows), 16
    tests = len({r.nodeid for r in rows})
    assert lines[0] == f"acestep-parity: {total} values in {tests} tests, {failed} values over the gate in 2 tests"
    live = next(line for line in lines if line.startswith(f"  {LIVE} (fp32):"))
    assert "16 values over the gate in 2 tests (text_hidden_states 16)" in live
    golden = next(line for line in lines if line.startswith(f"  {GOLDEN} (fp32):"))
    assert "none over the gate" in golden
    assert f"{failed} values over the gate in 2 tests" in "".join(reports.summary_html(rows))


def test_summary_lines_have_no_stray_separators():
    rows = [_row("audio", "snr_db", 95.0, pair="rust~golden"),  # audio without vt: no '; ,'
            _row("vt", "max_abs", 1e-6, pair="py_ort~golden"),  # vt without audio
            _row("text_token_ids", "mismatches", 0.0, pair="dll~py_ort")]  # neither
    lines = reports.summary_lines(rows)
    for line in lines:
        assert "; ," not in line and not line.rstrip().endswith((";", ",")), line
    assert any(line.endswith("worst audio SNR 95.0 dB (gate 80)") for line in lines)


def test_dit_and_lm_steps_on_separate_axes():
    rows = _all_rows()
    series = reports.step_series(rows, "text2music_01", LIVE, "fp32")
    assert set(series) == {"DiT", "LM"}
    assert set(series["DiT"]) == {"vt teacher", "vt free", "xt teacher", "xt free"}
    assert set(series["LM"]) == {"lm_topk_logits teacher"}
    assert sorted(series["LM"]["lm_topk_logits teacher"]) == [0, 1, 2, 3, 4]
    assert reports.STEP_AXES["DiT"] != reports.STEP_AXES["LM"]
    pytest.importorskip("matplotlib")
    assert reports.step_curves_png(rows, "text2music_01", LIVE, "fp32")
    dit_only = [r for r in rows if r.stage != "LM"]
    assert set(reports.step_series(dit_only, "text2music_01", LIVE, "fp32")) == {"DiT"}


def test_failure_text_is_short_and_names_the_worst_element():
    ref = np.zeros((1, 4, 3), dtype=np.float32)
    cand = ref.copy()
    cand[0, 2, 1] = 1e-3
    rows = [_row("vt", "max_abs", 1e-3, step=2, mode="teacher"), _row("vt", "rmse", 1e-6, step=2, mode="teacher")]
    message = "[DiT] text2music_01 vt step 2 (py_ort~torch, fp32): the check's own message"
    text = reports.failure_text(message, rows, ref, cand, "tests/test_parity.py:48")
    lines = text.splitlines()
    assert len(lines) <= 4
    assert lines[0].startswith("[DiT] text2music_01 vt step 2")
    assert "mode teacher" in lines[1] and "worst element [0, 2, 1] of (1, 4, 3)" in lines[1]
    assert f"within the gate: rmse={1e-6:.4g}" in text and "tests/test_parity.py:48" in text
    assert "array(" not in text and "Case(" not in text  # no fixture reprs
    nan = cand.copy()
    nan[0, 0, 0] = np.nan
    assert "[0, 0, 0]" in reports.worst_element(ref, nan)
    assert reports.worst_element(ref, ref) is None
    assert reports.worst_element(ref, ref[0]) is None


def test_matrix_cell_text_is_visible_text_only():
    """The cell text is the number alone: no metric names or gates (they wrap a cell to six lines)."""
    for cell in _parse(_all_rows()).cells:
        assert not re.search(r"max_abs|rmse|mismatches|gate", cell["text"]), cell
