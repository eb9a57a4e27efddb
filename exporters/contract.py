"""The I/O-contract tables of ``docs/io_contract.md``: rendered from :mod:`acestep_parity.exporters.specs`, parsed back by the
tests, so the document, the spec, the manifest and the graphs cannot drift apart unnoticed.

The tables sit between ``<!-- contract:begin -->`` and ``<!-- contract:end -->``; everything outside the markers
is prose. Regenerate them with ``acestep-export --print-contract``.
"""

from __future__ import annotations

import re

from acestep_parity.exporters.specs import AXES, CONFIG_DIMS, GRAPHS

BEGIN = "<!-- contract:begin -->"
END = "<!-- contract:end -->"
_IO_HEADER = "| graph | file | direction | name | dtype | shape |"


def format_shape(shape: tuple[str | int, ...] | list[str | int]) -> str:
    return "[" + ", ".join(str(e) for e in shape) + "]"


def render_tables() -> str:
    """The markdown between the markers (I/O table, then axis and config-dim tables)."""
    lines = [BEGIN, "", _IO_HEADER, "| --- | --- | --- | --- | --- | --- |"]
    for spec in GRAPHS:
        for direction, tensors in (("input", spec.inputs), ("output", spec.outputs)):
            for t in tensors:
                lines.append(f"| {spec.name} | {spec.filename} | {direction} | {t.name} | {t.dtype} | "
                             f"{format_shape(t.shape)} |")
    lines += ["", "| axis | kind | range | meaning |", "| --- | --- | --- | --- |"]
    for axis in AXES.values():
        lines.append(f"| {axis.name} | dynamic | {axis.min}..{axis.max} | {axis.description} |")
    for spec in GRAPHS:
        for name, (low, high) in spec.axis_limits.items():
            lines.append(f"| {name} ({spec.name}) | dynamic | {low}..{high} | {AXES[name].description}; "
                         f"narrower in {spec.filename} (see its workarounds) |")
    for name, meaning in CONFIG_DIMS.items():
        lines.append(f"| {name} | config | fixed per checkpoint | {meaning} |")
    lines += ["", END]
    return "\n".join(lines)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_io_table(markdown: str) -> list[dict]:
    """Rows of the I/O table in a document: ``{graph, file, direction, name, dtype, shape: [..]}``."""
    match = re.search(re.escape(BEGIN) + r"(.*?)" + re.escape(END), markdown, re.DOTALL)
    if not match:
        raise ValueError(f"no contract tables between {BEGIN} and {END}")
    lines = match.group(1).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == _IO_HEADER)
    except StopIteration:
        raise ValueError(f"no I/O table with header {_IO_HEADER!r}") from None
    rows = []
    for line in lines[start + 2:]:
        if not line.strip().startswith("|"):
            break
        graph, file, direction, name, dtype, shape = _cells(line)
        entries: list[str | int] = [int(e) if e.isdigit() else e for e in
                                    (p.strip() for p in shape.strip("[]").split(",")) if e]
        rows.append({"graph": graph, "file": file, "direction": direction, "name": name, "dtype": dtype,
                     "shape": entries})
    return rows
