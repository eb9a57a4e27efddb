"""The exported folder's integrity: every file ``manifest.json`` lists is checked against its size and SHA-256
before a runtime loads it, so a flipped byte, a truncated graph or an edited digest is refused naming the file
(ONNX Runtime loads many damaged graphs and runs them silently, making different music).

Hashing a multi-GB folder on every start would cost seconds, so the verdict is recorded beside the files in
:data:`RECORD`: ``{file: {"stat": [size, mtime_ns, ctime_ns], "sha256": ...}}``. A file whose stat still equals
its record and whose recorded digest equals the manifest's is not hashed again; any write to the file changes
its ctime, so the record cannot hide an edit. The Rust runtime (``acestep_core::digests``) applies the same rule
and reads and writes the same record.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from acestep_ort.hashing import sha256_file

RECORD = ".acestep-digests.json"
MANIFEST = "manifest.json"


class DigestError(RuntimeError):
    """A file of an exported folder is missing, of the wrong size, or does not match its SHA-256."""


@dataclass(frozen=True)
class Listed:
    """One file the manifest lists: its name inside the folder, size and digest, and where it is listed."""

    file: str
    bytes: int | None
    sha256: str
    where: str  # e.g. "graphs.dit_decoder.files[1]", for the message


def listed_files(manifest: dict, graphs: tuple[str, ...] | list[str] | None = None) -> list[Listed]:
    """The files of ``graphs`` (every graph when ``None``) and every asset, as the manifest lists them."""
    out: list[Listed] = []
    for name, record in (manifest.get("graphs") or {}).items():
        if graphs is not None and name not in graphs:
            continue
        for index, entry in enumerate(record.get("files") or []):
            if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
                out.append(Listed(str(entry["file"]), entry.get("bytes"), entry["sha256"],
                                  f"graphs.{name}.files[{index}]"))
    for name, entry in (manifest.get("assets") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
            out.append(Listed(str(entry.get("file", name)), entry.get("bytes"), entry["sha256"], f"assets.{name}"))
    return out


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read_record(folder: Path) -> dict:
    try:
        data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(folder: Path, record: dict) -> None:
    """Best effort (a read-only folder is verified again next time): a temporary file renamed into place, so
    concurrent runtimes never read half a record."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=RECORD, dir=folder)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
        os.replace(tmp, folder / RECORD)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def verify_folder(folder: Path, manifest: dict, graphs: tuple[str, ...] | list[str] | None = None) -> int:
    """Check every listed file of ``graphs`` (and the assets) in ``folder``; raises :class:`DigestError` naming
    the first bad file. Returns how many files had to be hashed (0 when the record vouched for all)."""
    folder = Path(folder)
    record = _read_record(folder)
    hashed = 0
    changed = False
    for item in listed_files(manifest, graphs):
        path = folder / item.file
        if not path.is_file():
            raise DigestError(f"{path} is missing ({MANIFEST} {item.where} lists it); re-export the folder "
                              "with `acestep-export`")
        key = _stat_key(path)
        if isinstance(item.bytes, int) and key[0] != item.bytes:
            raise DigestError(f"{path} is {key[0]} bytes, {MANIFEST} {item.where} says {item.bytes}: the file is "
                              "damaged or truncated; re-export the folder with `acestep-export`")
        seen = record.get(item.file)
        if isinstance(seen, dict) and seen.get("stat") == key and seen.get("sha256") == item.sha256:
            continue
        digest = sha256_file(path)
        hashed += 1
        if digest != item.sha256:
            raise DigestError(f"{path}: SHA-256 {digest} does not match {MANIFEST} {item.where} ({item.sha256}): "
                              "the file is damaged or the manifest was edited; re-export the folder with "
                              "`acestep-export`")
        record[item.file] = {"stat": key, "sha256": digest}
        changed = True
    if changed:
        _write_record(folder, record)
    return hashed
