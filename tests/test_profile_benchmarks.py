"""Speed of each lighter profile's graphs against their fp32 source, as ratios (``pytest --benchmark-only``).

Excluded from the default run (``--benchmark-skip`` in pytest.ini); no time is asserted. Both variants of a graph
replay the same recorded inputs (the fp32 folder's own calls on text2music_01 and simple_mode_01) in the same
process with the same session options; the second of the pair to finish (either order: the means are kept on
the run's config) stores ``time_ratio_vs_fp32`` in its ``extra_info`` (< 1: the profile is faster). docs/onnx_quantization.md has the figures and how to read them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from acestep_parity import paths
from acestep_parity.exporters.profiles.recipes import PROFILE_NAMES

GRAPHS = ("dit_decoder", "vae_decoder", "lm_prefill", "lm_decode")
CASES = ("text2music_01", "simple_mode_01")  # one feed set: the ids say "text2music_01+simple_mode_01" (-k <case>)
# {(profile, graph, "fp32" | "profile"): mean seconds} of this run, on its config (not a module global)
MEANS = pytest.StashKey[dict[tuple[str, str, str], float]]()


@pytest.fixture(scope="module")
def recorded(onnx_artifacts, feed_cases):
    from acestep_parity.exporters.profiles.feeds import record_feeds

    return record_feeds(onnx_artifacts, paths.CASES_DIR, feed_cases, GRAPHS, max_calls=8)


@pytest.mark.parametrize("which", ("fp32", "profile"))
@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("feed_cases", [CASES], ids=["+".join(CASES)], scope="module")
def test_profile_graph_speed(benchmark, feed_cases, profile, graph, which, onnx_artifacts, recorded, request):
    """Both variants replay the same feeds; each call gives every output the graph declares, finite where float."""
    from acestep_parity.exporters.profiles.derive import ensure_profile
    from acestep_parity.exporters.profiles.evaluate import _session

    directory = ensure_profile(onnx_artifacts, profile)
    record = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))["graphs"].get(graph)
    if record is None or not record["offered"]:
        pytest.skip(f"{profile} does not offer {graph} ({record['reason'] if record else 'no such graph'})")
    feeds = recorded.feeds.get(graph)
    if not feeds:
        pytest.skip(f"no {graph} call recorded on {', '.join(feed_cases)}")
    session = _session((onnx_artifacts if which == "fp32" else directory) / record["file"])
    benchmark.group = f"{profile}:{graph}"
    benchmark.extra_info.update({"profile": profile, "graph": graph, "variant": which, "calls": len(feeds)})
    results = benchmark(lambda: [session.run(None, f) for f in feeds])
    declared = len(session.get_outputs())
    assert all(len(outputs) == declared for outputs in results), f"{profile}:{graph} ({which}): missing outputs"
    floats = [o for outputs in results for o in outputs if np.issubdtype(np.asarray(o).dtype, np.floating)]
    assert all(np.isfinite(o).all() for o in floats), f"{profile}:{graph} ({which}): non-finite outputs"
    means = request.config.stash.setdefault(MEANS, {})
    means[(profile, graph, which)] = benchmark.stats.stats.mean
    fp32, prof = means.get((profile, graph, "fp32")), means.get((profile, graph, "profile"))
    if fp32 and prof:
        benchmark.extra_info["time_ratio_vs_fp32"] = prof / fp32
