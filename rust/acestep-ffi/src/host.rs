//! The host logic behind the entry points, as safe Rust on slices: request preparation (case validation,
//! prompts, token ids and masks, latent length, schedule, tiling plan), step inputs, the scheduler update,
//! VAE tile windows, audio post-processing. Everything numeric is `acestep-core`'s, so a host through this
//! library computes what the Python and Rust runtimes compute, bit for bit.

use std::path::{Path, PathBuf};

use acestep_core::case::{parse_case, Case};
use acestep_core::latents::{latent_frames, SAMPLE_RATE, TIMBRE_FIX_FRAME};
use acestep_core::noise::LATENT_CHANNELS;
use acestep_core::{audio, prompts, schedule, tiling};
use serde_json::{json, Map, Value};

use crate::context::AceContext;
use crate::error::{AceStatus, FfiError, FfiResult};

/// Validate a case given as a JSON object, exactly as a case file named `<id>.json` is validated.
pub fn parse_request(request: &Map<String, Value>) -> FfiResult<Case> {
    let id = request.get("id").and_then(Value::as_str).unwrap_or("request");
    let name = if id.is_empty() || id.contains(['/', '\\', '\0']) { "request".to_string() } else { id.to_string() };
    let path = PathBuf::from(format!("{name}.json"));
    let raw = Value::Object(request.clone()).to_string();
    parse_case(&path, raw.as_bytes())
        .map_err(|e| FfiError::new(AceStatus::InvalidArgument, e.field().map(str::to_string), e.to_string()))
}

fn tensor_json<T: Into<Value> + Copy>(shape: &[usize], data: &[T]) -> Value {
    json!({"shape": shape, "data": data.iter().map(|&x| x.into()).collect::<Vec<Value>>()})
}

/// Right-pad the same row for every batch item (upstream `_pad_sequences`): ids and 0/1 mask.
fn padded(row: &[i64], batch: usize) -> (Value, Value) {
    let shape = [batch, row.len()];
    let ids: Vec<i64> = row.repeat(batch);
    let mask: Vec<i64> = vec![1; batch * row.len()];
    (tensor_json(&shape, &ids), tensor_json(&shape, &mask))
}

/// Everything a host needs to run one text2music case, as one JSON object (see docs/dll_api.md).
pub fn prepare_request(ctx: &AceContext, request: &Map<String, Value>) -> FfiResult<Value> {
    prepare_case(ctx, &parse_request(request)?)
}

/// The largest duration a case file may ask for (`case.rs`), and so the largest a planned request may carry.
pub const MAX_PLANNED_DURATION_S: f64 = 600.0;

/// A simple-mode case's text2music request from the planner's token stream (`ace_prepare_planned_request`):
/// the stream decoded and parsed as upstream's `create_sample_from_query`, its fields put in place of the
/// case's (`planner.text2music_request`: unvalidated, language "unknown" and the case's duration as fallbacks),
/// then prepared as `ace_prepare_request` prepares a case. The planner's `text`, `metadata_json` and `sample`
/// are added under `"planner"`.
pub fn prepare_planned_request(ctx: &AceContext, request: &Map<String, Value>, tokens: &[i64]) -> FfiResult<Value> {
    let case = parse_request(request)?;
    if case.task != "simple_mode" {
        return Err(FfiError::arg("task", format!("a planned request needs a simple_mode case, got {:?}", case.task)));
    }
    let (planner, sample) = {
        let state = ctx.lm()?;
        let assets = state.assets.as_ref().ok_or_else(|| FfiError::arg("lm_dir", "LM assets not loaded"))?;
        crate::lm::finalize_sample(&assets.tok, tokens, case.instrumental)?
    };
    let case = acestep_core::lm_planner::text2music_case(&case, &sample);
    // The FSM caps the planner's duration at max_duration (<= 600 s); a stream that escaped it (a host that skipped
    // the constraints) must not size tensors beyond what a case file may ask for.
    if let Some(d) = case.music.duration.filter(|d| !d.is_finite() || *d > MAX_PLANNED_DURATION_S) {
        return Err(FfiError::arg(
            "duration",
            format!("the planner's duration {d} is out of range: at most {MAX_PLANNED_DURATION_S} seconds"),
        ));
    }
    let mut prepared = prepare_case(ctx, &case)?;
    if let Value::Object(map) = &mut prepared {
        map.insert("planner".into(), planner);
    }
    Ok(prepared)
}

/// Everything a host needs to run one validated text2music case (`prepare_request`'s body).
pub fn prepare_case(ctx: &AceContext, case: &Case) -> FfiResult<Value> {
    let batch = case.batch_size();
    let music = &case.music;
    let metas = prompts::metas_string(music.bpm, &music.keyscale, &music.timesignature, music.duration);
    let caption_prompt = prompts::caption_prompt(&music.caption, &metas, prompts::DEFAULT_DIT_INSTRUCTION);
    let lyric_prompt = prompts::lyric_prompt(&music.lyrics, &music.language);
    let text_row = ctx.tokenize(&caption_prompt, prompts::TEXT_MAX_TOKENS)?;
    let lyric_row = ctx.tokenize(&lyric_prompt, prompts::LYRIC_MAX_TOKENS)?;
    let (text_ids, text_mask) = padded(&text_row, batch);
    let (lyric_ids, lyric_mask) = padded(&lyric_row, batch);
    let frames = latent_frames(music.duration);
    let sched = schedule::resolve_schedule(case.shift, case.timesteps.as_deref());
    let t32 = schedule::schedule_f32(&sched);
    let tiles = tiling::plan_tiles(frames, tiling::CPU_CHUNK_SIZE, tiling::OVERLAP)
        .map_err(|e| FfiError::arg("duration", e.to_string()))?;
    let c = ctx.silence.channels;
    Ok(json!({
        "abi_version": crate::ACE_ABI_VERSION,
        "id": case.id,
        "task": case.task,
        "output_format": case.output_format,
        "batch": batch,
        "seeds": case.seeds,
        "metas": metas,
        "caption_prompt": caption_prompt,
        "lyric_prompt": lyric_prompt,
        "pad_id": ctx.pad_id,
        "text_token_ids": text_ids,
        "text_attention_mask": text_mask,
        "lyric_token_ids": lyric_ids,
        "lyric_attention_mask": lyric_mask,
        "latent_frames": frames,
        "latent_channels": LATENT_CHANNELS,
        "noise_shape": [batch, frames, LATENT_CHANNELS],
        "context_latents_shape": [batch, frames, 2 * c],
        "timbre_reference_shape": [batch, TIMBRE_FIX_FRAME, c],
        "timbre_order": (0..batch).collect::<Vec<_>>(),
        "steps": t32.len(),
        "schedule": t32.iter().map(|&t| f64::from(t)).collect::<Vec<_>>(),
        "dts": step_dts(&t32),
        "n_tiles": tiles.len(),
        "tiles": tiles.iter().map(|t| json!({
            "win_start": t.win_start, "win_end": t.win_end, "core_start": t.core_start, "core_end": t.core_end,
        })).collect::<Vec<_>>(),
        "sample_rate": SAMPLE_RATE,
    }))
}

/// The `dt` of every step for `ace_scheduler_step`: `t_i - t_{i+1}` of the float32 schedule in double, and
/// `t_last` for the final x0 step (`xt - vt * t` is `xt - vt * float32(t_last - 0)`).
pub fn step_dts(t32: &[f32]) -> Vec<f64> {
    (0..t32.len()).map(|i| f64::from(t32[i]) - t32.get(i + 1).map_or(0.0, |&n| f64::from(n))).collect()
}

fn number(state: &Map<String, Value>, key: &str) -> FfiResult<Option<f64>> {
    match state.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| FfiError::arg(key, format!("{key} is not a finite number"))),
        Some(other) => {
            Err(FfiError::new(AceStatus::InvalidJson, Some(key.into()), format!("{key} must be a number, got {other}")))
        }
    }
}

/// `ace_prepare_step_inputs`: the timestep feed of step `state.step` and its update parameters.
pub fn prepare_step(state: &Map<String, Value>, timestep: &mut [f32]) -> FfiResult<Value> {
    for key in state.keys() {
        if !["shift", "timesteps", "step"].contains(&key.as_str()) {
            return Err(FfiError::arg(key, format!("unknown state key {key:?} (allowed: shift, timesteps, step)")));
        }
    }
    let shift = number(state, "shift")?.unwrap_or(1.0);
    if shift <= 0.0 {
        return Err(FfiError::arg("shift", format!("shift must be > 0, got {shift}")));
    }
    let timesteps =
        match state.get("timesteps") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let values: Option<Vec<f64>> = items.iter().map(Value::as_f64).collect();
                let values = values.filter(|v| !v.is_empty() && v.iter().all(|t| (0.0..=1.0).contains(t)));
                Some(values.ok_or_else(|| {
                    FfiError::arg("timesteps", "timesteps must be a non-empty list of numbers in [0, 1]")
                })?)
            }
            Some(_) => {
                return Err(FfiError::new(
                    AceStatus::InvalidJson,
                    Some("timesteps".into()),
                    "timesteps must be a list or null",
                ))
            }
        };
    let step = match state.get("step") {
        Some(Value::Number(n)) => {
            n.as_u64().ok_or_else(|| FfiError::arg("step", format!("step must be a non-negative integer, got {n}")))?
        }
        Some(other) => {
            return Err(FfiError::new(
                AceStatus::InvalidJson,
                Some("step".into()),
                format!("step must be an integer, got {other}"),
            ))
        }
        None => return Err(FfiError::arg("step", "state needs the step index")),
    };
    let sched = schedule::resolve_schedule(shift, timesteps.as_deref());
    let t32 = schedule::schedule_f32(&sched);
    let i = usize::try_from(step).ok().filter(|&i| i < t32.len()).ok_or_else(|| {
        FfiError::arg("step", format!("step {step} is out of range: the schedule has {} steps", t32.len()))
    })?;
    if timestep.is_empty() {
        return Err(FfiError::new(
            AceStatus::LengthMismatch,
            Some("out_timestep".into()),
            "out_timestep needs batch >= 1 elements",
        ));
    }
    timestep.fill(t32[i]);
    Ok(
        json!({"step": i, "steps": t32.len(), "t": f64::from(t32[i]), "dt": step_dts(&t32)[i], "final": i + 1 == t32.len()}),
    )
}

/// `xt - vt * float32(dt)` (acestep-core's Euler step; the final x0 step is the same with `dt = t_last`).
pub fn scheduler_step(xt: &[f32], vt: &[f32], dt: f64) -> FfiResult<Vec<f32>> {
    if !dt.is_finite() {
        return Err(FfiError::arg("dt", format!("dt must be finite, got {dt}")));
    }
    Ok(schedule::euler_step(xt, vt, dt))
}

/// The plan of `frames` latent frames, or an error naming `frames`.
pub fn plan(frames: usize) -> FfiResult<Vec<tiling::Tile>> {
    if frames > 1 << 20 {
        // A plan holds one tile per stride: an absurd `frames` would be an allocation failure, an abort.
        return Err(FfiError::arg("frames", format!("frames must be at most 2^20, got {frames}")));
    }
    tiling::plan_tiles(frames, tiling::CPU_CHUNK_SIZE, tiling::OVERLAP)
        .map_err(|e| FfiError::arg("frames", e.to_string()))
}

fn tile_of(frames: usize, tile: usize) -> FfiResult<tiling::Tile> {
    let tiles = plan(frames)?;
    tiles.get(tile).copied().ok_or_else(|| {
        FfiError::arg("tile", format!("tile {tile} is out of range: {frames} frames make {} tiles", tiles.len()))
    })
}

/// The `[channels, win]` VAE input window of tile `tile` of item `item` of `[batch, frames, channels]` latents.
pub fn tile_window(
    latents: &[f32],
    batch: usize,
    frames: usize,
    item: usize,
    tile: usize,
) -> FfiResult<(usize, Vec<f32>)> {
    if batch == 0 || frames == 0 {
        return Err(FfiError::arg(if batch == 0 { "batch" } else { "frames" }, "batch and frames must be positive"));
    }
    if item >= batch {
        return Err(FfiError::arg("item", format!("item {item} is out of range for batch {batch}")));
    }
    let per_item = frames.checked_mul(LATENT_CHANNELS).ok_or_else(|| FfiError::arg("frames", "frames is too large"))?;
    let want = per_item.checked_mul(batch).ok_or_else(|| FfiError::arg("batch", "batch is too large"))?;
    crate::args::expect_len("latents", latents.len(), want)?;
    let t = tile_of(frames, tile)?;
    let src = &latents[item * per_item..(item + 1) * per_item];
    let width = t.win_end - t.win_start;
    let mut out = Vec::with_capacity(LATENT_CHANNELS * width);
    for ch in 0..LATENT_CHANNELS {
        out.extend((t.win_start..t.win_end).map(|f| src[f * LATENT_CHANNELS + ch]));
    }
    Ok((width, out))
}

/// `[start, end)` of the samples of a decoded tile to keep.
pub fn tile_trim(frames: usize, tile: usize, decoded_len: usize) -> FfiResult<(usize, usize)> {
    let t = tile_of(frames, tile)?;
    Ok(tiling::trim(&t, decoded_len))
}

/// Anti-clipping then -1 dBFS peak normalisation of `[batch, channels, samples]` audio.
pub fn postprocess_audio(audio_in: &[f32], batch: usize) -> FfiResult<Vec<f32>> {
    if batch == 0 || audio_in.is_empty() || !audio_in.len().is_multiple_of(batch) {
        return Err(FfiError::new(
            AceStatus::LengthMismatch,
            Some("len".into()),
            format!("audio of {} samples does not split into {batch} non-empty items", audio_in.len()),
        ));
    }
    audio::check_finite(audio_in, "the audio passed in").map_err(|m| FfiError::arg("audio", m))?;
    let mut out = audio_in.to_vec();
    audio::anti_clip(&mut out, batch);
    audio::normalize_peak(&mut out, batch, audio::NORMALIZATION_DB);
    Ok(out)
}

/// A float32 IEEE WAV file of one item `[channels, samples]` (what `save_audio` writes for `.wav`).
pub fn wav_bytes(audio_cs: &[f32], channels: usize, sample_rate: u32) -> FfiResult<Vec<u8>> {
    if channels == 0 || channels > 16 || audio_cs.is_empty() || !audio_cs.len().is_multiple_of(channels) {
        return Err(FfiError::new(
            AceStatus::LengthMismatch,
            Some("len".into()),
            format!("{} samples do not split into {channels} channels (1..16)", audio_cs.len()),
        ));
    }
    let samples = audio_cs.len() / channels;
    let data_len =
        u32::try_from(audio_cs.len() * 4).map_err(|_| FfiError::arg("len", "audio too long for a WAV file"))?;
    let mut out = Vec::with_capacity(58 + data_len as usize);
    out.extend(b"RIFF");
    out.extend((50 + data_len).to_le_bytes());
    out.extend(b"WAVEfmt ");
    out.extend(18u32.to_le_bytes());
    out.extend(3u16.to_le_bytes()); // WAVE_FORMAT_IEEE_FLOAT
    out.extend((channels as u16).to_le_bytes());
    out.extend(sample_rate.to_le_bytes());
    out.extend((sample_rate * 4 * channels as u32).to_le_bytes());
    out.extend((4 * channels as u16).to_le_bytes());
    out.extend(32u16.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out.extend(b"fact");
    out.extend(4u32.to_le_bytes());
    out.extend((samples as u32).to_le_bytes());
    out.extend(b"data");
    out.extend(data_len.to_le_bytes());
    for s in 0..samples {
        for ch in 0..channels {
            out.extend(audio_cs[ch * samples + s].to_le_bytes());
        }
    }
    Ok(out)
}

pub fn write_file(path: &Path, bytes: &[u8]) -> FfiResult<()> {
    std::fs::write(path, bytes)
        .map_err(|e| FfiError::new(AceStatus::Io, Some("path".into()), format!("{}: {e}", path.display())))
}

/// The value at a dot-separated `path` (`"tiles.2.win_start"`; array indices are numbers) of `doc`.
pub fn json_at<'a>(doc: &'a Value, path: &str) -> FfiResult<&'a Value> {
    let mut node = doc;
    if path.is_empty() {
        return Ok(node);
    }
    for part in path.split('.') {
        node = match node {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .ok_or_else(|| FfiError::arg("path", format!("no value at {path:?} (at {part:?})")))?;
    }
    Ok(node)
}

/// The numbers at `path`, flattened: a number or bool is one value, an array (nested arrays flattened in
/// row-major order) its numeric leaves. Anything else is an error.
pub fn json_numbers(node: &Value, path: &str, out: &mut Vec<f64>, ints: &mut Vec<i64>) -> FfiResult<()> {
    match node {
        Value::Number(n) => {
            let f = n.as_f64().ok_or_else(|| FfiError::arg("path", format!("{path:?}: {n} is not a number")))?;
            out.push(f);
            ints.push(n.as_i64().unwrap_or(f as i64));
        }
        Value::Bool(b) => {
            out.push(f64::from(u8::from(*b)));
            ints.push(i64::from(*b));
        }
        Value::Array(items) => {
            for item in items {
                json_numbers(item, path, out, ints)?;
            }
        }
        other => {
            let kind = match other {
                Value::Object(_) => "an object",
                Value::String(_) => "a string",
                _ => "null",
            };
            return Err(FfiError::arg("path", format!("{path:?} is {kind}, not a number or an array of numbers")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dts_end_with_the_last_timestep() {
        let t32 = schedule::schedule_f32(&schedule::SHIFT_3);
        let dts = step_dts(&t32);
        assert_eq!(dts.len(), 8);
        assert_eq!(dts[7] as f32, t32[7]);
        let xt = [1.0f32, -2.0];
        let vt = [0.25f32, 3.0];
        assert_eq!(scheduler_step(&xt, &vt, dts[7]).expect("step"), schedule::x0_step(&xt, &vt, t32[7]));
        assert_eq!(
            scheduler_step(&xt, &vt, dts[2]).expect("step"),
            schedule::ode_update(&xt, &vt, &schedule::SHIFT_3, 2)
        );
    }

    #[test]
    fn case_errors_carry_their_field() {
        let request = |text: &str| -> Map<String, Value> {
            match serde_json::from_str(text) {
                Ok(Value::Object(map)) => map,
                _ => panic!("not a JSON object: {text}"),
            }
        };
        let e = parse_request(&request(r#"{"id": "x", "task": "text2music", "seeds": [1], "bpm": 5}"#))
            .expect_err("bpm 5 is refused");
        assert_eq!(e.field.as_deref(), Some("bpm"));
        assert_eq!(e.message, "x.json: field 'bpm': 5 is out of range 30..300");
        let e = parse_request(&request(r#"{"id": "x", "task": "text2music"}"#)).expect_err("no seeds");
        assert_eq!(e.field.as_deref(), Some("seeds"));
    }
}
