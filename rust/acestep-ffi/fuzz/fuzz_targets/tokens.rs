//! Token streams: metadata finalization of arbitrary ids, the simple-mode hand-off to text2music
//! (`ace_prepare_planned_request`) on them, LM constraints on fuzzed logits and FSM updates with fuzzed tokens. With ACESTEP_FUZZ_ONNX_DIR set to an exported folder the LM path runs for real; on the tiny
//! fixture (no LM folder) the LM calls must fail cleanly (io), never crash.
#![no_main]
use std::ffi::c_char;

use acestep_runtime::*;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let ctx = common::ctx();
    let ids: Vec<i64> = data
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            i64::from_le_bytes(b)
        })
        .collect();
    let mut out: *mut c_char = std::ptr::null_mut();
    common::check(unsafe { ace_finalize_metadata(ctx, ids.as_ptr(), ids.len(), &mut out) });
    unsafe { ace_string_free(out) };
    let case = common::c_string(br#"{"id": "fuzz", "task": "simple_mode", "query": "q", "seeds": [1], "duration": 10}"#);
    common::check(unsafe { ace_prepare_planned_request(ctx, case.as_ptr(), ids.as_ptr(), ids.len(), &mut out) });
    unsafe { ace_string_free(out) };
    if data.first().is_some_and(|b| b % 4 == 0) {
        let options = common::c_string(br#"{"query": "fuzz"}"#);
        common::check(unsafe { ace_lm_reset(ctx, options.as_ptr(), &mut out) });
        unsafe { ace_string_free(out) };
    }
    let vocab = common::vocab_size(ctx);
    let logits: Vec<f32> = (0..vocab.unwrap_or(data.len()))
        .map(|i| f32::from(*data.get(i % data.len().max(1)).unwrap_or(&0)) - 100.0)
        .collect();
    let mut masked = vec![0f32; logits.len()];
    common::check(unsafe { ace_apply_lm_constraints(ctx, logits.as_ptr(), logits.len(), masked.as_mut_ptr()) });
    common::check(unsafe { ace_lm_update(ctx, ids.first().copied().unwrap_or(0) as u32) });
});
