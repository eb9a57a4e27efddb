//! Simple mode's planner host logic around the FSM: the Rust twin of `runtimes/py_ort/acestep_ort/host/lm_prompt.py` and the
//! loop pieces of `runtimes/py_ort/acestep_ort/host/lm_planner.py` (upstream `build_formatted_prompt_for_inspiration`,
//! `_compute_max_new_tokens`, `_generate_with_constrained_decoding`'s processors, 82252c2).
//!
//! Per step: FSM ([`crate::lm_fsm::LmFsm::apply`]) on the raw logits -> [`repetition_penalty`] ->
//! [`top_k_filter`] -> [`top_p_filter`] -> greedy [`crate::lm_fsm::argmax`] (parity mode, temperature 0) ->
//! `update`; stop after eos or pad. The project's seeded sampler (`host.planner.seeded_sample`, numpy PCG64) is
//! not ported: sampled mode is Python-only for now.

use sha2::{Digest, Sha256};

use crate::case::{Case, MusicFields};
use crate::lm_parse::SampleResult;

pub const EMPTY_QUERY: &str = "NO USER INPUT";
pub const DEFAULT_LM_INSPIRED_INSTRUCTION: &str =
    "Expand the user's input into a more detailed and specific musical description:";
pub const MAX_MODEL_LEN: usize = 4096;
pub const DEFAULT_MAX_NEW_TOKENS: usize = 4096;
/// Upstream `gpu_config`'s `max_duration_with_lm` without a GPU: a simple_mode case without a duration.
pub const CPU_MAX_DURATION: i64 = 240;
/// Per-step raw logits kept in the captures (`planner.TOPK_STORED`).
pub const TOPK_STORED: usize = 8;

/// `build_formatted_prompt_for_inspiration` through Qwen3's chat template (after the empty-query rule).
pub fn inspiration_prompt(query: &str, instrumental: bool) -> String {
    let query = if crate::pyfmt::py_strip(query).is_empty() { EMPTY_QUERY } else { query };
    let system = format!("# Instruction\n{DEFAULT_LM_INSPIRED_INSTRUCTION}\n\n");
    let user = format!("{query}\n\ninstrumental: {}", if instrumental { "true" } else { "false" });
    format!("<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

/// `_compute_max_new_tokens` without a target duration: `min(4096, 600*5+500, max_model_len-64)` = 3500.
pub fn max_new_tokens() -> usize {
    DEFAULT_MAX_NEW_TOKENS.min(600 * 5 + 500).min(MAX_MODEL_LEN - 64)
}

/// A simple_mode case's `duration` pins upstream's `max_duration`; without one, 240 s (CPU-only machine).
pub fn case_max_duration(duration: Option<f64>) -> i64 {
    duration.filter(|d| *d != 0.0).map(|d| d as i64).unwrap_or(CPU_MAX_DURATION)
}

/// transformers `RepetitionPenaltyLogitsProcessor`: every id seen, score < 0 -> *penalty, else /penalty.
pub fn repetition_penalty(ids: &[u32], scores: &mut [f32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen: Vec<u32> = ids.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        if let Some(v) = scores.get_mut(id as usize) {
            *v = if *v < 0.0 { *v * penalty } else { *v / penalty };
        }
    }
}

/// `_apply_top_k_filter`: everything below the k-th largest value becomes -inf (k = 0: off).
pub fn top_k_filter(scores: &mut [f32], k: usize) {
    if k == 0 || scores.is_empty() {
        return;
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = sorted[k.min(sorted.len()) - 1];
    for v in scores.iter_mut() {
        if *v < kth {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// `_apply_top_p_filter`: sort descending (stable), float32 softmax cumsum, drop tokens after the mass exceeds p
/// (the first token is always kept). `p` outside (0, 1): off.
pub fn top_p_filter(scores: &mut [f32], p: f32) {
    if !(p > 0.0 && p < 1.0) || scores.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let top = scores[order[0]];
    let probs: Vec<f32> = order.iter().map(|&i| (scores[i] - top).exp()).collect();
    let sum: f32 = probs.iter().sum();
    let mut cum = 0f32;
    let mut remove = vec![false; order.len()];
    for (j, prob) in probs.iter().enumerate() {
        cum += prob / sum;
        if j + 1 < order.len() {
            remove[j + 1] = cum > p;
        }
    }
    for (j, &i) in order.iter().enumerate() {
        if remove[j] {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// Top-1 minus top-2 of the finite constrained logits (inf where fewer than two are allowed).
pub fn margin(constrained: &[f32]) -> f64 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    let mut n = 0;
    for &v in constrained.iter().filter(|v| v.is_finite()) {
        n += 1;
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    if n < 2 {
        f64::INFINITY
    } else {
        (a - b) as f64
    }
}

/// `planner.mask_digests` for one step: the first 16 hex digits of SHA-256 of `np.packbits(allowed)`.
pub fn mask_digest(allowed: &[bool]) -> String {
    let mut bytes = vec![0u8; allowed.len().div_ceil(8)];
    for (i, &a) in allowed.iter().enumerate() {
        if a {
            bytes[i / 8] |= 0x80 >> (i % 8);
        }
    }
    Sha256::digest(&bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Ids of the `k` largest raw logits, descending (numpy's stable argsort of `-logits`: first index on ties).
pub fn topk_ids(logits: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| (-logits[a]).total_cmp(&-logits[b]));
    order.truncate(k.min(logits.len()));
    order
}

/// The planner's fields as a text2music request (`lm_planner.text2music_fields`): values unvalidated, as
/// upstream's UI passes them; a missing duration falls back to the case's cap.
pub fn text2music_fields(
    sample: &SampleResult,
    language_fallback: &str,
    duration_fallback: Option<f64>,
) -> MusicFields {
    MusicFields {
        caption: sample.caption.clone(),
        lyrics: sample.lyrics.clone(),
        language: if sample.language.is_empty() { language_fallback.to_string() } else { sample.language.clone() },
        bpm: sample.bpm,
        keyscale: sample.keyscale.clone(),
        timesignature: sample.timesignature.clone(),
        duration: match sample.duration {
            Some(d) if d != 0.0 => Some(d),
            _ => duration_fallback,
        },
    }
}

/// A simple_mode case after its planner run, as the text2music case it hands off (`lm_planner.text2music_request`):
/// the planner's music fields in place of the case's (language "unknown" and the case's duration as fallbacks),
/// seeds, shift and timesteps kept. What both `generate` and the C ABI's `ace_prepare_planned_request` run.
pub fn text2music_case(case: &Case, sample: &SampleResult) -> Case {
    Case {
        task: "text2music".to_string(),
        music: text2music_fields(sample, "unknown", case.music.duration),
        ..case.clone()
    }
}

/// The finished token stream -> (output text, `create_sample_from_query`'s metadata as Python's
/// `json.dumps(..., ensure_ascii=False, sort_keys=True)`): what the C ABI's `ace_finalize_metadata` returns.
pub fn finalize_metadata(
    vocab: &dyn crate::lm_fsm::LmVocab,
    tokens: &[u32],
    instrumental: bool,
) -> Result<(String, String), crate::lm_fsm::FsmError> {
    let text = vocab.decode(tokens)?;
    let metadata = crate::lm_parse::create_sample_fields(&text, instrumental);
    Ok((text.clone(), crate::lm_parse::metadata_json(&metadata)))
}
