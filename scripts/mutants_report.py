"""The report of `make mutants` (scripts/mutants.sh): per tool the counts, the score and the surviving mutants.

    python scripts/mutants_report.py mutmut --stage DIR --out reports/mutants --seconds S
        (DIR: the mutmut stage of mutants.sh; mutmut's own code reads its results there)
    python scripts/mutants_report.py cargo --outcomes reports/mutants/mutants.out --out reports/mutants --seconds S
    python scripts/mutants_report.py summary --out reports/mutants
    python scripts/mutants_report.py mark --out reports/mutants   (re-read docs/mutants_equivalent.txt, re-render)

Writes ``python.json`` / ``python.txt`` and ``rust.json`` / ``rust.txt`` (counts, score, one line per surviving
mutant: ``file:line: the change``) and ``summary.md`` over whichever of the two exist. The score is
killed / (killed + survived + timeout); mutmut's "no tests" mutants (no selected test reaches the function) are
counted as survived in it, and listed with them.

Survivors argued equivalent (no input tells them apart from the original) are listed in
``docs/mutants_equivalent.txt``, one rule a line: ``<tool> <pattern> | <reason>``, tool ``mutmut`` or ``cargo``; the
pattern (``*`` matches anything, nothing else is special) is matched against ``file::function: change`` (mutmut:
``removed -> added``; cargo-mutants: its own description), so line numbers may move. A survivor a rule matches is
marked with the rule's reason (a reason starting ``unkilled:`` says why a survivor that is not equivalent is left
alive); the rest are marked TO KILL.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
from pathlib import Path


def load_equivalents(path: Path) -> list[tuple[str, str, str]]:
    rules = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            head, _, reason = line.rpartition(" | ")  # the pattern may hold " | " (Python code): the reason not
            tool, _, glob = head.strip().partition(" ")
            rules.append((tool, glob.strip(), reason.strip()))
    return rules


UNKILLED = "unkilled:"  # a rule's reason that starts so lists a survivor that is not equivalent, and says why it lives


def _pattern(glob: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in glob.split("*")), re.S)


def equivalence_key(s: dict) -> str:
    return f"{s['file']}::{s['function']}: {s['change']}" if s.get("function") else f"{s['file']}: {s['change']}"


def mark_equivalents(report: dict, rules: list[tuple[str, str, str]], tool: str) -> None:
    compiled = [(_pattern(g), r) for t, g, r in rules if t == tool]
    for s in report["survivors"]:
        key = equivalence_key(s)
        s["equivalent"] = next((r for p, r in compiled if p.fullmatch(key)), None)
    known = [s["equivalent"] for s in report["survivors"] if s["equivalent"]]
    report["argued_equivalent"] = sum(1 for r in known if not r.startswith(UNKILLED))
    report["known_unkilled"] = sum(1 for r in known if r.startswith(UNKILLED))


def score(killed: int, survived: int, timeout: int) -> float | None:
    total = killed + survived + timeout
    return round(100.0 * killed / total, 1) if total else None


def _function_spans(source: str) -> dict[str, tuple[int, int]]:
    """``func`` and ``Class.method`` -> (first line with decorators, last line) in the original file."""
    spans: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                spans.setdefault(prefix + child.name, (first, child.end_lineno or child.lineno))
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(ast.parse(source), "")
    return spans


def _changes(diff: str) -> list[tuple[int, str, str]]:
    """(index of the first changed line in the function, removed text, added text) per hunk of a function diff."""
    out = []
    for hunk in re.split(r"^@@ ", diff, flags=re.M)[1:]:
        header, _, body = hunk.partition("\n")
        old_start = int(re.match(r"-(\d+)", header).group(1))
        index, removed, added, first = old_start, [], [], None
        for line in body.split("\n"):
            if line.startswith("-"):
                first = index if first is None else first
                removed.append(line[1:].strip())
                index += 1
            elif line.startswith("+"):
                first = index if first is None else first
                added.append(line[1:].strip())
            else:
                index += 1
        out.append((first if first is not None else old_start, " / ".join(removed), " / ".join(added)))
    return out


def mutmut_report(stage: Path, repo: Path) -> dict:
    os.chdir(stage)  # mutmut reads its configuration (pyproject.toml) and its results (mutants/) from here
    sys.path.insert(0, str(stage))
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    counts: dict[str, int] = {}
    per_file: dict[str, dict[str, int]] = {}
    survivors = []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        if not data.exit_code_by_key:
            continue
        real = (path.resolve().relative_to(repo.resolve())).as_posix()  # the stage links to the checkout
        source = path.read_text(encoding="utf-8")
        lines = source.split("\n")
        spans = _function_spans(source)
        for name, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            counts[status] = counts.get(status, 0) + 1
            per_file.setdefault(real, {}).setdefault(status, 0)
            per_file[real][status] += 1
            if status not in ("survived", "no tests", "timeout", "suspicious"):
                continue
            function, cls = orig_function_and_class_names_from_key(name)
            qual = f"{cls}.{function}" if cls else function
            first, last = spans.get(qual, (1, len(lines)))
            try:
                diff = get_diff_for_mutant(name, path=path)
            except Exception as exc:  # noqa: BLE001 - a diff we cannot render is still a survivor
                diff, change = "", (0, f"(no diff: {exc})", "")
            changes = _changes(diff) if diff else [change]
            index, removed, added = changes[0] if changes else (1, "", "")
            line = first + index - 1
            # the function text mutmut diffs may start above the def (comments): find the removed line near it
            wanted = removed.split(" / ")[0]
            if wanted and not (0 < line <= len(lines) and lines[line - 1].strip() == wanted):
                near = [n for n in range(first, last + 1) if lines[n - 1].strip() == wanted]
                if near:
                    line = min(near, key=lambda n: abs(n - line))
            survivors.append({"status": status, "file": real, "line": line, "function": qual, "mutant": name,
                              "change": f"{removed} -> {added}" if removed or added else "", "diff": diff})
    killed = counts.get("killed", 0) + counts.get("segfault", 0) + counts.get("caught by type check", 0)
    survived = counts.get("survived", 0) + counts.get("no tests", 0)
    timeout = counts.get("timeout", 0)
    survivors.sort(key=lambda s: (s["file"], s["line"], s["mutant"]))
    return {"tool": "mutmut", "mutants": sum(counts.values()), "killed": killed, "survived": survived,
            "no_tests": counts.get("no tests", 0), "timeout": timeout, "unviable": 0,
            "suspicious": counts.get("suspicious", 0), "segfault": counts.get("segfault", 0),
            "score_percent": score(killed, survived, timeout), "statuses": counts, "per_file": per_file,
            "survivors": survivors}


def cargo_report(outcomes_dir: Path) -> dict:
    data = json.loads((outcomes_dir / "outcomes.json").read_text(encoding="utf-8"))

    def listed(name: str) -> list[str]:
        path = outcomes_dir / name
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line] if path.is_file() else []

    survivors = []
    per_file: dict[str, dict[str, int]] = {}
    for status, name in (("survived", "missed.txt"), ("timeout", "timeout.txt")):
        for entry in listed(name):
            file, line, _col, change = (entry.split(":", 3) + ["", "", ""])[:4]
            survivors.append({"status": status, "file": file, "line": int(line) if line.isdigit() else 0,
                              "change": change.strip()})
    for status, name in (("killed", "caught.txt"), ("survived", "missed.txt"), ("timeout", "timeout.txt"),
                         ("unviable", "unviable.txt")):
        for entry in listed(name):
            file = entry.split(":", 1)[0]
            per_file.setdefault(file, {}).setdefault(status, 0)
            per_file[file][status] += 1
    killed, survived, timeout = data.get("caught", 0), data.get("missed", 0), data.get("timeout", 0)
    survivors.sort(key=lambda s: (s["file"], s["line"], s["change"]))
    return {"tool": "cargo-mutants", "mutants": data.get("total_mutants", 0), "killed": killed,
            "survived": survived, "timeout": timeout, "unviable": data.get("unviable", 0),
            "score_percent": score(killed, survived, timeout), "per_file": per_file, "survivors": survivors}


def render(report: dict) -> str:
    head = (f"{report['tool']}: {report['mutants']} mutants, {report['killed']} killed, {report['survived']} survived"
            + (f" ({report['no_tests']} of them reached by no selected test)" if report.get("no_tests") else "")
            + f", {report['timeout']} timeout, {report['unviable']} unviable"
            + (f", {report['suspicious']} suspicious" if report.get("suspicious") else "")
            + f"; score {report['score_percent']} % (killed / (killed + survived + timeout))"
            + (f"; {report['seconds']} s" if report.get("seconds") is not None else "")
            + f"\n{report.get('argued_equivalent', 0)} of the survivors are argued equivalent and "
              f"{report.get('known_unkilled', 0)} known not killed, with the reason (docs/mutants_equivalent.txt); "
              "the others are marked TO KILL")
    out = [head, "", "per file (killed / survived / timeout / unviable):"]
    for file, c in sorted(report["per_file"].items()):
        surv = c.get("survived", 0) + c.get("no tests", 0)
        out.append(f"  {file}: {c.get('killed', 0) + c.get('segfault', 0)} / {surv} / {c.get('timeout', 0)}"
                   f" / {c.get('unviable', 0)}")
    out += ["", "surviving mutants (file:line: the change):"]
    for s in report["survivors"]:
        tag = "" if s["status"] == "survived" else f" [{s['status']}]"
        where = f"{s['file']}:{s['line']}"
        what = s["change"] + (f"  ({s['mutant']})" if "mutant" in s else "")
        reason = s.get("equivalent")
        verdict = ("TO KILL" if not reason else f"NOT KILLED: {reason[len(UNKILLED):].strip()}"
                   if reason.startswith(UNKILLED) else f"equivalent: {reason}")
        out.append(f"  {where}:{tag} {what}\n      -> {verdict}")
    return "\n".join(out) + "\n"


def summary(out: Path) -> str:
    rows = ["| tool | scope | mutants | killed | survived (argued equivalent) | timeout | unviable | score | wall |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, scope in (("python", "acestep_ort/host ([tool.mutmut] only_mutate)"),
                        ("rust", "acestep-core (files in .cargo/mutants.toml)")):
        path = out / f"{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text(encoding="utf-8"))
        rows.append(f"| {r['tool']} | {scope} | {r['mutants']} | {r['killed']} | {r['survived']} "
                    f"({r.get('argued_equivalent', 0)}) | {r['timeout']} "
                    f"| {r['unviable']} | {r['score_percent']} % | {r.get('seconds', '?')} s |")
    return ("# make mutants\n\nScore = killed / (killed + survived + timeout). Surviving mutants: python.txt, "
            "rust.txt.\n\n" + "\n".join(rows) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tool", choices=["mutmut", "cargo", "summary", "mark"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stage", type=Path)
    parser.add_argument("--outcomes", type=Path)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--seconds", type=int)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rules = load_equivalents(args.repo / "docs" / "mutants_equivalent.txt")
    if args.tool == "mark":
        for name, tool in (("python", "mutmut"), ("rust", "cargo")):
            path = out / f"{name}.json"
            if path.is_file():
                report = json.loads(path.read_text(encoding="utf-8"))
                mark_equivalents(report, rules, tool)
                path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
                (out / f"{name}.txt").write_text(render(report), encoding="utf-8")
    elif args.tool != "summary":
        name = "python" if args.tool == "mutmut" else "rust"
        report = mutmut_report(args.stage.resolve(), args.repo) if args.tool == "mutmut" else cargo_report(
            args.outcomes.resolve())
        report["seconds"] = args.seconds
        mark_equivalents(report, rules, args.tool)
        (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        text = render(report)
        (out / f"{name}.txt").write_text(text, encoding="utf-8")
        print(text.split("\n", 1)[0])
    (out / "summary.md").write_text(summary(out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
