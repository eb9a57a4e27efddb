"""Host logic shared by every backend: schedules, shift rule, custom timesteps, latent length, prompts, tiling."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from acestep_ort.host import audio, latents, prompts, schedule, tiling


@pytest.mark.parametrize("shift", [1.0, 2.0, 3.0], ids=["shift1", "shift2", "shift3"])
def test_turbo_table_equals_closed_form(shift):
    table = np.asarray(schedule.SHIFT_TIMESTEPS[shift], dtype=np.float32)
    formula = np.asarray(schedule.shift_formula(shift), dtype=np.float32)
    assert np.array_equal(table, formula)


def test_valid_timesteps_is_union_of_tables():
    union = sorted({t for table in schedule.SHIFT_TIMESTEPS.values() for t in table}, reverse=True)
    assert tuple(union) == schedule.VALID_TIMESTEPS


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(1.5, 1.0), (2.5, 2.0), (2.6, 3.0), (0.2, 1.0), (10.0, 3.0), (2.0, 2.0), (1.49, 1.0), (1.51, 2.0)],
    ids=lambda v: str(v),
)
def test_nearest_shift_ties_to_smaller(requested, expected):
    assert schedule.nearest_shift(requested) == expected


def test_custom_timesteps_doc_example():
    got = schedule.resolve_schedule(3.0, [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0])
    assert got == [0.9545454545454546, 0.7692307692307693, 0.625, 0.5, 0.4, 0.3, 0.2222222222222222, 0.125]


def test_custom_timesteps_edge_rules():
    assert schedule.resolve_schedule(2.0, [0, 0]) == list(schedule.SHIFT_TIMESTEPS[2.0])  # empty -> shift table
    assert len(schedule.resolve_schedule(1.0, [0.5] * 25)) == schedule.MAX_CUSTOM_TIMESTEPS
    # midpoint of 1.0 and 0.9545...: first entry of VALID_TIMESTEPS wins the tie
    mid = float(np.float32((1.0 + 0.9545454545454546) / 2))
    assert schedule.snap_custom_timesteps([mid]) == [min(schedule.VALID_TIMESTEPS, key=lambda x: abs(x - mid))]


def test_euler_and_x0_updates():
    xt = np.full((1, 4, 64), 2.0, dtype=np.float32)
    vt = np.full((1, 4, 64), 0.5, dtype=np.float32)
    sched = list(schedule.SHIFT_TIMESTEPS[1.0])
    out = schedule.ode_update(xt, vt, sched, 0)
    assert out.dtype == np.float32 and np.all(out == np.float32(2.0 - 0.5 * 0.125))
    final = schedule.ode_update(xt, vt, sched, 7)
    assert np.all(final == np.float32(2.0 - 0.5 * 0.125))  # x0 = xt - vt * t_last, t_last = 0.125


@pytest.mark.parametrize(
    ("duration", "frames"),
    [(6.0, 150), (6.2, 155), (12.0, 300), (3.0, 128), (5.12, 128), (5.16, 130), (0.01, 128), (None, 3000),
     (-1.0, 3000), (10.29, 257)],
    ids=lambda v: str(v),
)
def test_latent_length_rules(duration, frames):
    assert latents.latent_frames(duration) == frames


def test_context_latents_are_silence_then_ones():
    silence = np.arange(2 * 64 * 10, dtype=np.float32).reshape(1, 64, 20)
    ctx = latents.context_latents(silence, 25, batch=2)  # longer than the buffer: tiled
    assert ctx.shape == (2, 25, 128)
    assert np.array_equal(ctx[0, :20, :64], silence[0].T)
    assert np.array_equal(ctx[0, 20:, :64], silence[0].T[:5])
    assert np.all(ctx[..., 64:] == 1.0)


def test_caption_prompt_exact_string():
    metas = prompts.metas_string(bpm=120, keyscale="C major", timesignature="4", duration=6.0)
    text = prompts.caption_prompt("upbeat pop", metas)
    assert text == (
        "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n"
        "# Caption\nupbeat pop\n\n"
        "# Metas\n- bpm: 120\n- timesignature: 4\n- keyscale: C major\n- duration: 6 seconds\n<|endoftext|>\n"
    )


def test_metas_defaults_when_absent():
    assert prompts.metas_string() == (
        "- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 30 seconds\n"
    )
    assert prompts.metas_string(timesignature="N/A", duration=12.9) .endswith("- duration: 12 seconds\n")


def test_lyric_prompt_and_instruction():
    assert prompts.lyric_prompt("la la", "en") == "# Languages\nen\n\n# Lyric\nla la<|endoftext|>"
    assert prompts.format_instruction("Do it") == "Do it:"
    wrapped = "# Instruction\nX:\n\n# Caption\nreal caption\n\n# Metas\n- bpm: 1\n"
    assert prompts.extract_caption_from_sft_format(wrapped) == "real caption"
    caption_only = "# Caption\nmy song\n# Metas\n- bpm: 1"  # both headings are needed to strip anything
    assert prompts.extract_caption_from_sft_format(caption_only) == caption_only
    two_lines = "# Instruction\nX:\n\n# Caption\nline one\nline two\n\n# Metas\n- bpm: 1\n"  # re.DOTALL
    assert prompts.extract_caption_from_sft_format(two_lines) == "line one\nline two"


@pytest.mark.parametrize(
    ("frames", "n_tiles"), [(128, 1), (256, 1), (257, 3), (300, 3), (384, 3), (385, 4)], ids=lambda v: str(v)
)
def test_tile_plan(frames, n_tiles):
    tiles = tiling.plan_tiles(frames)
    assert len(tiles) == n_tiles
    assert tiles[0].core_start == 0 and tiles[-1].core_end == frames
    assert all(a.core_end == b.core_start for a, b in zip(tiles, tiles[1:], strict=False))
    assert all(t.win_end - t.win_start <= tiling.CPU_CHUNK_SIZE for t in tiles)


def test_tiled_decode_exact_length_and_placement():
    calls = []

    def fake_decode(window):
        calls.append(window.shape[-1])
        return np.repeat(window[:, :2, :], 1920, axis=-1)  # [1, 2, t*1920], sample k carries frame k // 1920

    lat = np.arange(300, dtype=np.float32)[None, None, :].repeat(64, axis=1)
    out = tiling.tiled_decode(lat, fake_decode)
    assert out.shape == (1, 2, 300 * 1920)
    assert len(calls) == 3 and max(calls) <= tiling.CPU_CHUNK_SIZE
    assert np.array_equal(out[0, 0], np.repeat(np.arange(300, dtype=np.float32), 1920))


def test_anti_clip_and_normalization():
    wav = np.array([[[0.5, -2.0]], [[0.0, 0.0]]], dtype=np.float32)
    clipped = audio.anti_clip(wav)
    assert np.allclose(clipped[0], [[0.25, -1.0]]) and np.all(clipped[1] == 0)
    norm = audio.normalize_peak(clipped)
    assert np.isclose(np.abs(norm[0]).max(), 10 ** (-1 / 20)) and np.all(norm[1] == 0)


# ------------------------------------------------------------------- mutants left alive by the tests above (make mutants)


def test_context_latents_one_frame_over_the_buffer_and_float32():
    silence = np.arange(64 * 20, dtype=np.float64).reshape(1, 64, 20)  # float64 in: the graphs take float32
    ctx = latents.context_latents(silence, 21, batch=1)
    assert ctx.shape == (1, 21, 128) and ctx.dtype == np.float32
    assert np.array_equal(ctx[0, 20, :64], silence[0, :, 0])  # frame 21 is the buffer's first again


def test_timbre_reference_is_the_first_750_silence_frames_per_item():
    silence = np.arange(64 * 800, dtype=np.float64).reshape(1, 64, 800)
    ref, order = latents.timbre_reference(silence, 3)
    assert ref.shape == (3, latents.TIMBRE_FIX_FRAME, 64) and ref.dtype == np.float32
    assert all(np.array_equal(ref[b], silence[0].T[: latents.TIMBRE_FIX_FRAME]) for b in range(3))
    assert order.dtype == np.int64 and order.tolist() == [0, 1, 2]


def test_tiled_decode_batch_overlap_and_progress():
    windows, progress = [], []

    def fake_decode(window):
        windows.append(window.shape)
        return np.repeat(window[:, :2, :], 4, axis=-1)  # [1, 2, t*4]

    lat = np.stack([np.arange(300, dtype=np.float32), -np.arange(300, dtype=np.float32)])[:, None, :]
    lat = lat.repeat(8, axis=1)  # [2, 8, 300], items differ
    out = tiling.tiled_decode(lat, fake_decode, chunk_size=128, overlap=16,
                              on_tile=lambda k, n: progress.append((k, n)))
    n = len(tiling.plan_tiles(300, 128, 16))
    assert n != len(tiling.plan_tiles(300, 128))  # the overlap given is the one used
    assert out.shape == (2, 2, 300 * 4)
    assert all(shape[0] == 1 for shape in windows) and len(windows) == 2 * n  # item by item
    assert np.array_equal(out[0, 0], np.repeat(np.arange(300, dtype=np.float32), 4))
    assert np.array_equal(out[1, 1], -np.repeat(np.arange(300, dtype=np.float32), 4))
    assert progress == [(k, n) for k in range(1, n + 1)] * 2


def test_save_audio_formats_and_refusals(tmp_path):
    import soundfile as sf

    wav = (np.sin(np.arange(2 * 4800, dtype=np.float32) / 7.0) * 0.5).reshape(2, 4800)
    wav[0, 0] = 1.5  # past full scale: float wav keeps it, flac and mp3 clip
    out = audio.save_audio(tmp_path / "a" / "b" / "x.WAV", wav, sample_rate=44100)  # folders made, suffix any case
    data, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 44100 and sf.info(out).subtype == "FLOAT" and sf.info(out).format == "WAV"
    assert np.array_equal(data.T, wav)
    flac = audio.save_audio(tmp_path / "x.flac", wav)
    data, rate = sf.read(flac, dtype="float32", always_2d=True)
    assert rate == 48000 and sf.info(flac).subtype == "PCM_16" and sf.info(flac).format == "FLAC"
    assert data.shape == (4800, 2) and np.max(np.abs(data.T[:, 1:] - wav[:, 1:])) < 1 / 32767
    with pytest.raises(ValueError, match=r"unsupported audio format '\.ogg' for .*x\.ogg; use one of"):
        audio.save_audio(tmp_path / "x.ogg", wav)
    with pytest.raises(ValueError, match=r"expected \[channels, samples\] audio, got shape \(1, 2, 4800\)"):
        audio.save_audio(tmp_path / "y.wav", wav[None])
    assert not (tmp_path / "y.wav").exists()


def test_save_audio_mp3_bytes(tmp_path):
    pytest.importorskip("lameenc")  # the mp3 extra
    wav = (np.sin(np.arange(2 * 4800, dtype=np.float32) / 7.0) * 0.5).reshape(2, 4800)
    wav[0, 0], wav[1, 1] = 1.5, -1.5  # past full scale both ways: clipped to [-1, 1]
    mp3 = audio.save_audio(tmp_path / "x.mp3", wav)
    header = mp3.read_bytes()
    sync = header.find(b"\xff\xfb")  # MPEG-1 layer III frame: bitrate index 9 = 128 kbit/s, 48 kHz, stereo
    assert sync >= 0 and header[sync + 2] >> 4 == 9 and (header[sync + 2] >> 2) & 3 == 1
    assert header[sync + 3] >> 6 != 3
    # LAME is deterministic: these bytes are lameenc 1.9.0's (the pinned mp3 extra) for 128k, quality 2, clip to
    # [-1, 1] then * 32767; another setting or scale gives other bytes
    assert hashlib.sha256(header).hexdigest() == "9fda8eb199889b956769d9f1e4635f3cc44aecff9debdc429da7f3c816f5f1ee"


def test_schedule_defaults_float32_snapping_and_x0_dtype():
    assert schedule.resolve_schedule() == list(schedule.SHIFT_TIMESTEPS[1.0])  # shift 1 when none is given
    # just under the midpoint of 1.0 and 0.9545... in float64, over it once rounded to float32 as the handler does
    assert schedule.snap_custom_timesteps([0.9772727272727272]) == [1.0]
    xt = np.full((1, 4, 2), 0.5, dtype=np.float32)
    vt = np.full((1, 4, 2), 0.25, dtype=np.float32)
    x0 = schedule.x0_step(xt, vt, 0.5)
    assert x0.dtype == np.float32 and np.all(x0 == np.float32(0.375))


def test_tiling_overlap_floor_and_limits():
    assert tiling.effective_overlap(129, 64) == 64  # 129 - 128 = 1 > 0: kept
    assert tiling.effective_overlap(10, 6) == tiling.MIN_OVERLAP  # 6 -> 3 jumps below the floor: back to 4
    assert tiling.effective_overlap(10, 3) == 3  # asked below the floor: kept
    tiles = tiling.plan_tiles(200, 129, 64)  # stride 1: one frame per window core, still valid
    assert len(tiles) == 200 and tiles[5] == tiling.Tile(0, 70, 5, 6)
    with pytest.raises(ValueError, match=r"^latent_frames must be positive, got 0$"):
        tiling.plan_tiles(0)
    floor = 2 * tiling.OVERLAP + tiling.MIN_STRIDE
    assert tiling.budget_chunk(1, 10**9, max_frames=floor) == floor  # the graph's limit may be the floor itself


def test_vae_chunking_settings():
    shape = tiling.VaeShape.from_config({"decoder_channels": 8, "channel_multiples": [1, 2],
                                         "downsampling_ratios": [3, 5]})
    assert shape == tiling.VaeShape(8, (1, 2), (3, 5))
    assert tiling.VaeChunking(memory_mb=1).memory_mb == 1
    env = {tiling.ENV_TILING: "upstream", tiling.ENV_MEMORY: "100"}
    assert tiling.VaeChunking.from_env(env) == tiling.VaeChunking("upstream", 100)
    assert tiling.VaeChunking(memory_mb=10**6).chunk_size(tiling.VaeShape(), max_frames=300) == 300


def test_post_processing_per_item_float32_and_inputs_untouched():
    wav = np.array([[[0.5, -2.0, 0.0, 1.0]], [[4.0, 0.0, 0.0, 0.0]]], dtype=np.float64)  # [2, 1, 4]
    clipped = audio.anti_clip(wav)
    assert clipped.dtype == np.float32 and np.abs(clipped).max(axis=(1, 2)).tolist() == [1.0, 1.0]
    quiet = np.array([[[0.1, -0.2]], [[0.0, 0.05]]], dtype=np.float32)
    before = quiet.copy()
    norm = audio.normalize_peak(quiet)
    assert np.array_equal(quiet, before)  # a new array: the caller's is not rescaled in place
    target = np.float32(10 ** (audio.NORMALIZATION_DB / 20))
    assert norm.dtype == np.float32 and np.allclose(np.abs(norm).max(axis=(1, 2)), target)
    assert audio.normalize_peak(wav).dtype == np.float32


def test_save_audio_mp3_without_lameenc_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lameenc", None)  # import lameenc -> ImportError
    with pytest.raises(RuntimeError, match=r"^mp3 output needs the 'lameenc' package \(pip install lameenc\)$"):
        audio.save_audio(tmp_path / "x.mp3", np.zeros((2, 10), np.float32))
