//! JSON / string inputs: configurations, cases, step states, JSON paths (arbitrary bytes, invalid UTF-8 included).
#![no_main]
use std::ffi::c_char;

use acestep_runtime::*;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let ctx = common::ctx();
    let split = data.first().map_or(0, |b| *b as usize % (data.len().max(1)));
    let (a, b) = data.split_at(split.min(data.len()));
    let text = common::c_string(a);
    let path = common::c_string(b);
    let mut out: *mut c_char = std::ptr::null_mut();
    let st = unsafe { ace_prepare_request(ctx, text.as_ptr(), &mut out) };
    common::check(st);
    unsafe { ace_string_free(out) };
    let mut t = [0f32; 4];
    let st = unsafe { ace_prepare_step_inputs(ctx, text.as_ptr(), t.as_mut_ptr(), t.len(), &mut out) };
    common::check(st);
    unsafe { ace_string_free(out) };
    let created = unsafe { ace_create_context(text.as_ptr()) };
    unsafe { ace_free_context(created) };
    let mut vals = [0i64; 8];
    let mut n = 0usize;
    common::check(unsafe { ace_json_i64(text.as_ptr(), path.as_ptr(), vals.as_mut_ptr(), vals.len(), &mut n) });
    let mut f = [0f64; 8];
    common::check(unsafe { ace_json_f64(text.as_ptr(), path.as_ptr(), f.as_mut_ptr(), f.len(), &mut n) });
});
