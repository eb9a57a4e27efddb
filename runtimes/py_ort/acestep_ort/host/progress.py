"""A dependency-free progress bar on stderr for the DiT steps and VAE tiles (the runtime must not need tqdm)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def stderr_progress(width: int = 30) -> Callable[[str, int, int], None]:
    """``progress(stage, done, total)`` drawing ``dit [#####.....] 4/8 0.9s`` in place."""
    started: dict[str, float] = {}

    def update(stage: str, done: int, total: int) -> None:
        start = started.setdefault(stage, time.perf_counter())
        filled = int(width * done / max(total, 1))
        unit = "steps" if stage == "dit" else "tiles"
        line = f"\r{stage:>4} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit} " \
               f"{time.perf_counter() - start:.1f}s"
        sys.stderr.write(line + ("\n" if done >= total else ""))
        sys.stderr.flush()
        if done >= total:
            started.pop(stage, None)

    return update
