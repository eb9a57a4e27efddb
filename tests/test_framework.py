"""The framework itself: a corrupted golden fails exactly the affected tests; the tolerance file's rules hold."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from acestep_parity import paths
from acestep_parity.tolerances import ToleranceError, Tolerances

REPO = paths.REPO_ROOT


def _junit_outcomes(xml_path: Path) -> dict[str, str]:
    import xml.etree.ElementTree as ET

    out = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = case.get("name")
        if case.find("failure") is not None or case.find("error") is not None:
            out[name] = "failed"
        elif case.find("skipped") is not None:
            out[name] = "skipped"
        else:
            out[name] = "passed"
    return out


def _corrupt_golden(tmp_path: Path, store, *, update_digest: bool) -> Path:
    """A copy of the golden with one value of text2music_04's step-2 velocity moved by 1e-3."""
    from acestep_parity.golden import array_digest

    golden_root = tmp_path / "golden"
    shutil.copytree(store.root, golden_root / store.checkpoint_id)
    npz = golden_root / store.checkpoint_id / "text2music_04.npz"
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["vt"][2, 0, 7, 5] += np.float32(1e-3)  # one value of step 2's velocity
    np.savez_compressed(npz, **arrays)
    if update_digest:  # as if it had been frozen that way: only the gates can catch it
        manifest_path = golden_root / store.checkpoint_id / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["cases"]["text2music_04"]["arrays"]["vt"]["sha256_16"] = array_digest(arrays["vt"])
        manifest_path.write_text(json.dumps(manifest))
    return golden_root


def _run_parity(tmp_path: Path, golden_root: Path, parity_session) -> tuple[subprocess.CompletedProcess, dict]:
    junit = tmp_path / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "tests/test_parity.py", "-p", "no:cacheprovider", "-q",
           "--backend", "torch", "--case", "text2music_04", "--golden-dir", str(golden_root),
           "--checkpoint-dir", str(parity_session.checkpoint[0]), "--parity-report", str(tmp_path / "reports"),
           f"--junitxml={junit}", "--html", str(tmp_path / "report.html"), "--self-contained-html"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    return proc, _junit_outcomes(junit)


def test_edited_golden_fails_naming_file_and_array(tmp_path, parity_session, record_property):
    """One changed byte in a golden npz (digest not updated): every golden test of that case fails, and the
    message names the file and the array; nothing silently becomes the new reference."""
    pytest.importorskip("torch")
    store = parity_session.golden
    if not store.exists():
        pytest.skip(f"no golden for {store.checkpoint_id}")
    golden_root = _corrupt_golden(tmp_path, store, update_digest=False)
    proc, outcomes = _run_parity(tmp_path, golden_root, parity_session)
    failed = sorted(name for name, outcome in outcomes.items() if outcome == "failed")
    record_property("failed_count", len(failed))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert failed and len(failed) == len(outcomes), "every golden-pair test of the case must fail"
    assert "text2music_04.npz: array 'vt' does not match its digest" in proc.stdout
    assert "acestep-parity freeze" in proc.stdout


def test_wrong_golden_value_fails_exactly_the_affected_tests(tmp_path, parity_session, record_property):
    """A golden frozen with one wrong velocity value (digest consistent): exactly step 2's vt tests fail, tagged
    DiT, and the report shows the number and a plot."""
    pytest.importorskip("torch")
    store = parity_session.golden
    if not store.exists():
        pytest.skip(f"no golden for {store.checkpoint_id}")
    golden_root = _corrupt_golden(tmp_path, store, update_digest=True)
    proc, outcomes = _run_parity(tmp_path, golden_root, parity_session)
    failed = sorted(name for name, outcome in outcomes.items() if outcome == "failed")
    record_property("failed", failed)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert failed == ["test_dit_step[torch~golden-fp32-text2music_04-step2-vt-free]",
                      "test_dit_step[torch~golden-fp32-text2music_04-step2-vt-teacher]"]
    assert sum(o == "passed" for o in outcomes.values()) > 30
    report = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert report["failure_tags"]["text2music_04|torch~golden|fp32"] == "DiT"
    html = (tmp_path / "report.html").read_text()
    assert "max_abs=0.001" in html  # the measured number is in the report ...
    assert re.search(r"data:image/png;base64,", html)  # ... with a plot
    assert "Parity matrix" in html and "torch~golden (fp32)" in html  # ... under the pair matrix
    assert "this machine:" in html and "golden frozen on:" in html  # ... beside where the golden came from
    # the terminal tells each failed gate in a few lines (issue 20.7), not a traceback of fixture reprs
    failures = proc.stdout[proc.stdout.index("= FAILURES ="):proc.stdout.index("acestep-parity:")]
    assert "worst element [0, 7, 5]" in failures and "tests/test_parity.py:" in failures
    assert "Case(" not in failures and "array(" not in failures and len(failures.splitlines()) <= 12


def test_tolerance_override_needs_reason(tmp_path):
    data = json.loads(paths.TOLERANCE_FILE.read_text())
    data["overrides"] = [{"case": "text2music_05", "pair": "torch~golden", "profile": "fp32", "tensor": "vt",
                          "metric": "max_abs", "gate": 1e-3}]
    bad = tmp_path / "tolerances.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ToleranceError, match="reason"):
        Tolerances.load(bad)
    data["overrides"][0]["reason"] = "root cause tracked in docs/parity_ops.md"
    bad.write_text(json.dumps(data))
    gates = Tolerances.load(bad).gates("torch~golden", "fp32", "vt", "text2music_05")
    assert gates["max_abs"].source == "override" and gates["max_abs"].value == 1e-3


def test_scoped_overrides_apply_only_in_their_scope(tmp_path):
    """``full_depth`` overrides (upstream's depth, docs/realsize.md) change nothing at the suite's own depth, reach
    every case with ``case: "*"``, give way to a case-specific override, and never touch what plan section 9 gates
    (vt, xt, audio); an unknown scope is refused."""
    from acestep_parity.checkpoint import TEXT_DIR, read_json
    from acestep_parity.tolerances import FULL_DEPTH, checkpoint_scopes

    tolerances = Tolerances.load(paths.TOLERANCE_FILE)
    scoped = [ov for ov in tolerances.overrides if "scope" in ov]
    assert scoped and {ov["scope"] for ov in scoped} == {FULL_DEPTH}
    assert not {ov["tensor"] for ov in scoped} & {"vt", "xt", "audio"}
    for ov in scoped:
        plain = tolerances.gates(ov["pair"], ov["profile"], ov["tensor"], "text2music_01")
        deep = tolerances.gates(ov["pair"], ov["profile"], ov["tensor"], "text2music_01", scopes=(FULL_DEPTH,))
        assert plain[ov["metric"]].source == "default" and deep[ov["metric"]].value == ov["gate"]
    assert checkpoint_scopes({"num_hidden_layers": 28}) == (FULL_DEPTH,)
    assert checkpoint_scopes(read_json(paths.ensure_synthetic_checkpoint("tiny") / TEXT_DIR / "config.json")) == ()
    data = json.loads(paths.TOLERANCE_FILE.read_text())
    data["overrides"].append({"case": "text2music_01", "pair": "py_ort~torch", "profile": "fp32", "scope": FULL_DEPTH,
                              "tensor": "text_hidden_states", "metric": "rmse", "gate": 4e-6, "reason": "case-specific"})
    path = tmp_path / "tolerances.json"
    path.write_text(json.dumps(data))
    gates = Tolerances.load(path).gates("py_ort~torch", "fp32", "text_hidden_states", "text2music_01",
                                        scopes=(FULL_DEPTH,))
    assert gates["rmse"].value == 4e-6
    data["overrides"][-1]["scope"] = "tall"
    path.write_text(json.dumps(data))
    with pytest.raises(ToleranceError, match="unknown scope"):
        Tolerances.load(path)


def test_tolerance_file_is_the_only_place_gates_live():
    """No numeric gate literal in the parity tests: every comparison goes through the ``check`` fixture."""
    pattern = re.compile(r"(atol|rtol|max_abs|rmse|snr|pearson)\w*\s*(<=|>=|<|>|=)\s*[0-9.]+e?-?[0-9]*")
    offenders = []
    for path in (REPO / "tests").glob("test_*.py"):
        if path.name in ("test_metrics.py", "test_framework.py"):
            continue  # unit tests of the metric math itself, and this checker
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.name}:{lineno}: {line.strip()}")
    assert not offenders, "numeric gates in test code:\n" + "\n".join(offenders)


def test_every_parity_pair_in_use_has_gates(tolerances):
    from acestep_parity.parametrize import GOLDEN_PAIRS, LIVE_PAIRS, STAGE_TENSORS

    for candidate, reference in GOLDEN_PAIRS + LIVE_PAIRS:
        for tensor in (*STAGE_TENSORS, "vt", "xt", "audio"):
            assert tolerances.gates(f"{candidate}~{reference}", "fp32", tensor)


def test_golden_gates_are_never_looser_than_plan_section_9(tolerances):
    """Cross-machine golden gates come from measurement with margin, but never above plan.md §9."""
    from acestep_parity.parametrize import GOLDEN_PAIRS

    plan = tolerances.defaults["plan_section_9"]["fp32"]
    for candidate, reference in GOLDEN_PAIRS:
        for tensor, limits in plan.items():
            gates = tolerances.gates(f"{candidate}~{reference}", "fp32", tensor)
            for metric, limit in limits.items():
                gate = gates[metric]
                assert (gate.value <= limit) if gate.direction == "max" else (gate.value >= limit), \
                    f"{candidate}~{reference} {tensor} {metric} {gate.value} is looser than plan §9 ({limit})"


def test_golden_refuses_stale_case_and_checkpoint(parity_session, tmp_path):
    from acestep_parity.golden import GoldenError, GoldenStore

    store = parity_session.golden
    if not store.exists():
        pytest.skip(f"no golden for {store.checkpoint_id}")
    case = next(c for c in parity_session.cases if c.task == "text2music")
    with pytest.raises(GoldenError, match="changed since its golden was frozen.*acestep-parity freeze"):
        store.load(case.id, "0" * 64)
    other = GoldenStore(store.root, store.checkpoint_id, {**store.checkpoint_hashes, "vae/config.json": "x"})
    with pytest.raises(GoldenError, match="other checkpoint files.*acestep-parity freeze"):
        other.load(case.id, case.sha256)
    empty = GoldenStore(tmp_path / "none", "synth-x", {}, tmp_path / "ckpt")
    with pytest.raises(GoldenError, match=f"acestep-parity freeze --checkpoint-dir {tmp_path / 'ckpt'}"):
        empty.manifest()


def test_missing_golden_skips_with_freeze_command(tmp_path, parity_session):
    cmd = [sys.executable, "-m", "pytest", "tests/test_parity.py", "-p", "no:cacheprovider", "-q", "-rs",
           "--backend", "torch", "--case", "text2music_04", "-k", "test_audio", "--golden-dir", str(tmp_path),
           "--checkpoint-dir", str(parity_session.checkpoint[0]), "--parity-report", ""]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout and "acestep-parity freeze" in proc.stdout
