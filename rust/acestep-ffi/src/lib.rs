//! ACE-Step 1.5 host logic as a C-ABI library (ABI v1): hosts in any language run ONNX Runtime themselves
//! and call this library for everything else (case validation, prompts, tokenization, torch-exact noise,
//! schedule, scheduler step, VAE tiling, audio post-processing). It links no ONNX Runtime.
//!
//! Every entry point is `extern "C"`, runs behind `catch_unwind` and reports failures as an [`AceStatus`]
//! plus a thread-local JSON error (`ace_last_error`). The header `include/acestep_runtime.h` is generated
//! from this file by cbindgen (`make header`; `tests/header.rs` fails when it is stale). See docs/dll_api.md.

use std::ffi::{c_char, CString};
use std::path::Path;

pub mod args;
pub mod context;
pub mod error;
pub mod host;
pub mod lm;
#[doc(hidden)]
pub mod testkit;

use args::{c_str, expect_len, json_object, out_ptr, slice, slice_mut, write_json};
pub use context::AceContext;
use error::{guard, panic_error, set_last_error, FfiResult};
pub use error::{AceStatus, FfiError};

/// The ABI version this library implements; it only ever grows by additions (see docs/dll_api.md).
pub const ACE_ABI_VERSION: u32 = 1;

unsafe fn context<'a>(ctx: *const AceContext) -> FfiResult<&'a AceContext> {
    let ptr = out_ptr(ctx as *mut AceContext, "ctx")?;
    Ok(&*ptr)
}

unsafe fn clear_out(out: *mut *mut c_char) {
    if !out.is_null() && (out as usize).is_multiple_of(std::mem::align_of::<*mut c_char>()) {
        *out = std::ptr::null_mut();
    }
}

/// The ABI version (1). A host checks it before anything else.
#[no_mangle]
pub extern "C" fn ace_abi_version() -> u32 {
    ACE_ABI_VERSION
}

/// `"acestep-runtime <crate version> (abi <n>)"`; free it with `ace_string_free`.
#[no_mangle]
pub extern "C" fn ace_version_string() -> *mut c_char {
    args::into_c_string(format!("acestep-runtime {} (abi {ACE_ABI_VERSION})", env!("CARGO_PKG_VERSION")))
}

/// Free a string returned by this library (`NULL` is ignored). Never pass it anything else.
///
/// # Safety
/// `s` is NULL or a string returned by this library and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ace_string_free(s: *mut c_char) {
    if !s.is_null() {
        let _ = std::panic::catch_unwind(|| drop(CString::from_raw(s)));
    }
}

/// The last error of this thread as JSON `{"code", "name", "message", "field"}`, or NULL when the last call
/// on this thread succeeded. Free it with `ace_string_free`. Every other entry point clears it first.
#[no_mangle]
pub extern "C" fn ace_last_error() -> *mut c_char {
    std::panic::catch_unwind(|| error::last_error().map(|e| args::into_c_string(e.to_json())))
        .ok()
        .flatten()
        .unwrap_or(std::ptr::null_mut())
}

/// Create a context from a JSON configuration: `{"onnx_dir": "<exported folder>"}` (tokenizer.json,
/// tokenizer_config.json and silence_latent.npy are read from it), or the files named one by one
/// (`tokenizer_json`, `tokenizer_config`, `silence_latent`). Returns NULL on error (see `ace_last_error`).
/// Free it with `ace_free_context`.
///
/// # Safety
/// `config_json` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ace_create_context(config_json: *const c_char) -> *mut AceContext {
    let mut created: *mut AceContext = std::ptr::null_mut();
    guard(|| {
        let config = json_object(config_json, "config_json")?;
        created = Box::into_raw(Box::new(AceContext::from_config(&config)?));
        Ok(())
    });
    created
}

/// Free a context (`NULL` is ignored). Every context is freed exactly once, after its last use. Like every entry
/// point it clears this thread's last error.
///
/// # Safety
/// `ctx` is NULL or a context from `ace_create_context` not freed yet, used by no other thread now.
#[no_mangle]
pub unsafe extern "C" fn ace_free_context(ctx: *mut AceContext) {
    error::clear_last_error();
    if ctx.is_null() {
        return;
    }
    if let Err(payload) = std::panic::catch_unwind(|| drop(Box::from_raw(ctx))) {
        set_last_error(panic_error(payload));
    }
}

/// Validate a case (the JSON of a `cases/*.json` file) and prepare everything a host needs to run it:
/// prompts, token ids and masks, latent length and tensor shapes, schedule and per-step `dt`, tiling plan.
/// `*out_json` receives a JSON object (free it with `ace_string_free`); NULL on error.
///
/// # Safety
/// `ctx` is a live context; `case_json` a NUL-terminated string; `out_json` a writable `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_prepare_request(
    ctx: *const AceContext,
    case_json: *const c_char,
    out_json: *mut *mut c_char,
) -> AceStatus {
    clear_out(out_json);
    guard(|| {
        let ctx = context(ctx)?;
        let request = json_object(case_json, "case_json")?;
        write_json(out_json, &host::prepare_request(ctx, &request)?)
    })
}

/// Torch-exact initial noise: one `torch.Generator("cpu").manual_seed(seed)` per item, `randn(1, frames, 64)`
/// each, stacked to `[n_seeds, frames, 64]` into `out` (`out_len == n_seeds * frames * 64`).
///
/// # Safety
/// `seeds` holds `n_seeds` values; `out` holds `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_noise(
    ctx: *const AceContext,
    seeds: *const u64,
    n_seeds: usize,
    frames: usize,
    out: *mut f32,
    out_len: usize,
) -> AceStatus {
    guard(|| {
        context(ctx)?;
        let seeds = slice(seeds, n_seeds, "seeds")?;
        let out = slice_mut(out, out_len, "out")?;
        if seeds.is_empty() || frames == 0 {
            return Err(FfiError::arg(
                if seeds.is_empty() { "n_seeds" } else { "frames" },
                "n_seeds and frames must be positive",
            ));
        }
        let want = n_seeds
            .checked_mul(frames)
            .and_then(|n| n.checked_mul(acestep_core::noise::LATENT_CHANNELS))
            .ok_or_else(|| FfiError::arg("frames", "n_seeds * frames * 64 overflows"))?;
        expect_len("out", out.len(), want)?;
        let noise =
            acestep_core::noise::prepare_noise(seeds, frames).map_err(|e| FfiError::arg("seeds", e.to_string()))?;
        out.copy_from_slice(&noise);
        Ok(())
    })
}

/// Context latents for text2music: `[batch, frames, 2C]` (silence latent then an all-ones chunk mask).
///
/// # Safety
/// `out` holds `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_context_latents(
    ctx: *const AceContext,
    frames: usize,
    batch: usize,
    out: *mut f32,
    out_len: usize,
) -> AceStatus {
    guard(|| {
        let ctx = context(ctx)?;
        let out = slice_mut(out, out_len, "out")?;
        if frames == 0 || frames > 1 << 20 {
            return Err(FfiError::arg("frames", format!("frames must be 1..2^20, got {frames}")));
        }
        if batch == 0 || batch > 1 << 10 {
            return Err(FfiError::arg("batch", format!("batch must be 1..1024, got {batch}")));
        }
        expect_len("out", out.len(), batch * frames * 2 * ctx.silence.channels)?;
        out.copy_from_slice(&ctx.silence.context_latents(frames, batch));
        Ok(())
    })
}

/// Timbre reference of text2music: `[batch, 750, C]` silence (its order is `0..batch`).
///
/// # Safety
/// `out` holds `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_timbre_reference(
    ctx: *const AceContext,
    batch: usize,
    out: *mut f32,
    out_len: usize,
) -> AceStatus {
    guard(|| {
        let ctx = context(ctx)?;
        let out = slice_mut(out, out_len, "out")?;
        if batch == 0 || batch > 1 << 10 {
            return Err(FfiError::arg("batch", "batch must be 1..1024"));
        }
        expect_len("out", out.len(), batch * acestep_core::latents::TIMBRE_FIX_FRAME * ctx.silence.channels)?;
        out.copy_from_slice(&ctx.silence.timbre_reference(batch).0);
        Ok(())
    })
}

/// Inputs of one denoising step. `state_json`: `{"shift": s, "timesteps": [..] | null, "step": i}` (the
/// case's shift and timesteps). Fills `out_timestep` (`[batch]`, the `timestep` and `timestep_r` feeds)
/// and writes `{"step", "steps", "t", "dt", "final"}` to `*out_json` (`dt` goes to `ace_scheduler_step`).
///
/// # Safety
/// `state_json` a NUL-terminated string; `out_timestep` holds `out_len` writable floats; `out_json` a slot.
#[no_mangle]
pub unsafe extern "C" fn ace_prepare_step_inputs(
    ctx: *const AceContext,
    state_json: *const c_char,
    out_timestep: *mut f32,
    out_len: usize,
    out_json: *mut *mut c_char,
) -> AceStatus {
    clear_out(out_json);
    guard(|| {
        context(ctx)?;
        let state = json_object(state_json, "state_json")?;
        let timestep = slice_mut(out_timestep, out_len, "out_timestep")?;
        out_ptr(out_json, "out_json")?;
        let info = host::prepare_step(&state, timestep)?;
        write_json(out_json, &info)
    })
}

/// The ODE update `out_xt = xt - vt * (float)dt` over `len` floats (float32, no FMA: numpy's and torch's
/// result). `out_xt` may be `xt` itself (in place); it must not overlap anything else.
///
/// # Safety
/// `xt`, `vt` hold `len` floats; `out_xt` holds `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_scheduler_step(
    ctx: *const AceContext,
    xt: *const f32,
    vt: *const f32,
    len: usize,
    dt: f64,
    out_xt: *mut f32,
) -> AceStatus {
    guard(|| {
        context(ctx)?;
        // Copies first: `out_xt` may alias `xt`, and a shared and a mutable slice of one buffer may not coexist.
        let next = host::scheduler_step(slice(xt, len, "xt")?, slice(vt, len, "vt")?, dt)?;
        slice_mut(out_xt, len, "out_xt")?.copy_from_slice(&next);
        Ok(())
    })
}

/// The VAE decoder input of tile `tile` of item `item`: `[64, win]` (row-major) from `[batch, frames, 64]`
/// latents (`frames` 1..2^20); `out_len` must be `64 * (win_end - win_start)` of that tile (see the request's
/// `tiles`).
///
/// # Safety
/// `latents` holds `latents_len` floats; `out` holds `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_tile_window(
    ctx: *const AceContext,
    latents: *const f32,
    latents_len: usize,
    batch: usize,
    frames: usize,
    item: usize,
    tile: usize,
    out: *mut f32,
    out_len: usize,
) -> AceStatus {
    guard(|| {
        context(ctx)?;
        let (_, window) = host::tile_window(slice(latents, latents_len, "latents")?, batch, frames, item, tile)?;
        let out = slice_mut(out, out_len, "out")?;
        expect_len("out", out.len(), window.len())?;
        out.copy_from_slice(&window);
        Ok(())
    })
}

/// The samples `[*out_start, *out_end)` of a decoded tile (`decoded_len` samples per channel) to keep
/// (`frames` 1..2^20).
///
/// # Safety
/// `out_start`, `out_end` are writable.
#[no_mangle]
pub unsafe extern "C" fn ace_tile_trim(
    ctx: *const AceContext,
    frames: usize,
    tile: usize,
    decoded_len: usize,
    out_start: *mut usize,
    out_end: *mut usize,
) -> AceStatus {
    guard(|| {
        context(ctx)?;
        let start = out_ptr(out_start, "out_start")?;
        let end = out_ptr(out_end, "out_end")?;
        let (s, e) = host::tile_trim(frames, tile, decoded_len)?;
        *start = s;
        *end = e;
        Ok(())
    })
}

/// Audio post-processing of `[batch, channels, samples]` audio: anti-clipping, then -1 dBFS peak
/// normalisation per item. `out` may be `audio` itself.
///
/// # Safety
/// `audio` holds `len` floats; `out` holds `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_postprocess_audio(
    ctx: *const AceContext,
    audio: *const f32,
    len: usize,
    batch: usize,
    out: *mut f32,
) -> AceStatus {
    guard(|| {
        context(ctx)?;
        if batch == 0 || (len > 0 && batch > len) {
            return Err(FfiError::arg("batch", format!("batch must be 1..len ({len}), got {batch}")));
        }
        let processed = host::postprocess_audio(slice(audio, len, "audio")?, batch)?;
        slice_mut(out, len, "out")?.copy_from_slice(&processed);
        Ok(())
    })
}

/// Write one item `[channels, samples]` as a float32 WAV file at `path` (what the runtimes write for `.wav`).
///
/// # Safety
/// `path` a NUL-terminated string; `audio` holds `len` floats.
#[no_mangle]
pub unsafe extern "C" fn ace_write_wav(
    ctx: *const AceContext,
    path: *const c_char,
    audio: *const f32,
    len: usize,
    channels: usize,
) -> AceStatus {
    guard(|| {
        context(ctx)?;
        let path = c_str(path, "path")?;
        if channels == 0 || channels > 16 {
            return Err(FfiError::arg("channels", format!("channels must be 1..16, got {channels}")));
        }
        let bytes = host::wav_bytes(slice(audio, len, "audio")?, channels, acestep_core::latents::SAMPLE_RATE)?;
        host::write_file(Path::new(path), &bytes)
    })
}

/// Shared body of the two JSON number readers: parse, walk `path`, flatten, copy what fits.
unsafe fn json_read<T: Copy>(
    json: *const c_char,
    path: *const c_char,
    out: *mut T,
    capacity: usize,
    out_count: *mut usize,
    pick: fn(&[f64], &[i64]) -> Vec<T>,
) -> AceStatus {
    guard(|| {
        let doc: serde_json::Value = serde_json::from_str(c_str(json, "json")?)
            .map_err(|e| FfiError::new(AceStatus::InvalidJson, Some("json".into()), format!("json: {e}")))?;
        let path = c_str(path, "path")?;
        let count = out_ptr(out_count, "out_count")?;
        let (mut floats, mut ints) = (Vec::new(), Vec::new());
        host::json_numbers(host::json_at(&doc, path)?, path, &mut floats, &mut ints)?;
        let values = pick(&floats, &ints);
        *count = values.len();
        if out.is_null() && capacity == 0 {
            return Ok(()); // size query
        }
        let out = slice_mut(out, capacity, "out")?;
        if capacity < values.len() {
            return Err(FfiError::new(
                AceStatus::LengthMismatch,
                Some("capacity".into()),
                format!("{path:?} holds {} values, the buffer only {capacity}", values.len()),
            ));
        }
        out[..values.len()].copy_from_slice(&values);
        Ok(())
    })
}

/// Read the numbers at a dot-separated `path` (`"dts"`, `"tiles.0.win_end"`, `"text_token_ids.data"`) of a
/// JSON document (e.g. from `ace_prepare_request`) as doubles, for hosts without a JSON parser. A number or
/// bool gives one value; an array its numeric leaves, flattened. `*out_count` receives how many there are;
/// with `out == NULL` and `capacity == 0` nothing else is written (a size query).
///
/// # Safety
/// `json`, `path` are NUL-terminated; `out` holds `capacity` writable doubles; `out_count` is writable.
#[no_mangle]
pub unsafe extern "C" fn ace_json_f64(
    json: *const c_char,
    path: *const c_char,
    out: *mut f64,
    capacity: usize,
    out_count: *mut usize,
) -> AceStatus {
    json_read(json, path, out, capacity, out_count, |f, _| f.to_vec())
}

/// `ace_json_f64` for integers (token ids, shapes, seeds, tile bounds) as `int64_t`.
///
/// # Safety
/// As `ace_json_f64`.
#[no_mangle]
pub unsafe extern "C" fn ace_json_i64(
    json: *const c_char,
    path: *const c_char,
    out: *mut i64,
    capacity: usize,
    out_count: *mut usize,
) -> AceStatus {
    json_read(json, path, out, capacity, out_count, |_, i| i.to_vec())
}

/// Start an LM planner generation on this context (simple mode): `options_json` is `{"query": str,
/// "instrumental": bool, "vocal_language": str | null, "max_duration": int (10..600, default 240)}`.
/// `*out_json` receives `{"prompt", "prompt_ids", "vocab_size", "eos_token_id", "pad_token_id",
/// "max_new_tokens", "max_duration"}`: the host feeds `prompt_ids` to the LM graphs. One generation at a
/// time per context (a reset abandons the previous one).
///
/// # Safety
/// `options_json` a NUL-terminated string; `out_json` a writable `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_lm_reset(
    ctx: *const AceContext,
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> AceStatus {
    clear_out(out_json);
    guard(|| {
        let ctx = context(ctx)?;
        let options = json_object(options_json, "options_json")?;
        out_ptr(out_json, "out_json")?;
        let mut state = ctx.lm()?;
        state.generation = None;
        let assets = state.assets.as_mut().ok_or_else(|| FfiError::arg("lm_dir", "LM assets not loaded"))?;
        let (generation, info) = lm::begin(assets, &options)?;
        state.generation = Some(generation);
        write_json(out_json, &info)
    })
}

/// Upstream's constrained-decoding FSM on one row of raw LM logits: `out_masked_logits` receives the row with
/// every forbidden token at `-inf` (allowed ones unchanged, bit for bit). `vocab_size` must be the LM's.
/// `out_masked_logits` may be `logits` itself. Then choose a token and call `ace_lm_update`.
///
/// # Safety
/// `logits` holds `vocab_size` floats; `out_masked_logits` holds `vocab_size` writable floats.
#[no_mangle]
pub unsafe extern "C" fn ace_apply_lm_constraints(
    ctx: *const AceContext,
    logits: *const f32,
    vocab_size: usize,
    out_masked_logits: *mut f32,
) -> AceStatus {
    guard(|| {
        let ctx = context(ctx)?;
        let row = slice(logits, vocab_size, "logits")?.to_vec();
        let mut state = ctx.lm()?;
        let generation = state
            .generation
            .as_mut()
            .ok_or_else(|| FfiError::arg("ctx", "no LM generation in progress: call ace_lm_reset first"))?;
        let masked = generation.apply(&row)?;
        slice_mut(out_masked_logits, vocab_size, "out_masked_logits")?.copy_from_slice(&masked);
        Ok(())
    })
}

/// Advance the FSM with the token the host chose after `ace_apply_lm_constraints`.
///
/// # Safety
/// `ctx` is a live context.
#[no_mangle]
pub unsafe extern "C" fn ace_lm_update(ctx: *const AceContext, token_id: u32) -> AceStatus {
    guard(|| {
        let ctx = context(ctx)?;
        let mut state = ctx.lm()?;
        let generation = state
            .generation
            .as_mut()
            .ok_or_else(|| FfiError::arg("ctx", "no LM generation in progress: call ace_lm_reset first"))?;
        generation.update(token_id)
    })
}

/// The planner's result from its token stream: decodes `token_ids` with the LM tokenizer and parses it as
/// upstream's `create_sample_from_query` does. `*out_json` receives `{"text", "metadata_json" (Python's
/// `json.dumps(metadata, ensure_ascii=False, sort_keys=True)`, byte for byte), "metadata", "sample"}`.
/// `instrumental` comes from the last `ace_lm_reset` (false without one).
///
/// # Safety
/// `token_ids` holds `len` ids; `out_json` a writable `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_finalize_metadata(
    ctx: *const AceContext,
    token_ids: *const i64,
    len: usize,
    out_json: *mut *mut c_char,
) -> AceStatus {
    clear_out(out_json);
    guard(|| {
        let ctx = context(ctx)?;
        let tokens = slice(token_ids, len, "token_ids")?;
        out_ptr(out_json, "out_json")?;
        let state = ctx.lm()?;
        let instrumental = state.generation.as_ref().is_some_and(|g| g.instrumental);
        let assets = state.assets.as_ref().ok_or_else(|| FfiError::arg("lm_dir", "LM assets not loaded"))?;
        write_json(out_json, &lm::finalize(&assets.tok, tokens, instrumental)?)
    })
}

/// Simple mode's hand-off from the planner to text2music: `case_json` is the simple_mode case (the JSON of a
/// `cases/*.json` file), `token_ids` the planner's generated token stream. The stream is decoded and parsed as
/// `ace_finalize_metadata` does, its caption, lyrics, bpm, keyscale, time signature, duration and language
/// replace the case's (unvalidated, as upstream's UI passes them; language "unknown" and the case's duration when
/// the planner wrote none), and the result is prepared as `ace_prepare_request` prepares a text2music case.
/// `*out_json` receives that request JSON plus `"planner": {"text", "metadata_json", "metadata", "sample"}`.
/// A planned duration above 600 s (the case-file limit; the FSM never allows one) is an error (`duration`).
///
/// # Safety
/// `case_json` a NUL-terminated string; `token_ids` holds `len` ids; `out_json` a writable `char *` slot.
#[no_mangle]
pub unsafe extern "C" fn ace_prepare_planned_request(
    ctx: *const AceContext,
    case_json: *const c_char,
    token_ids: *const i64,
    len: usize,
    out_json: *mut *mut c_char,
) -> AceStatus {
    clear_out(out_json);
    guard(|| {
        let ctx = context(ctx)?;
        let request = json_object(case_json, "case_json")?;
        let tokens = slice(token_ids, len, "token_ids")?;
        out_ptr(out_json, "out_json")?;
        write_json(out_json, &host::prepare_planned_request(ctx, &request, tokens)?)
    })
}
