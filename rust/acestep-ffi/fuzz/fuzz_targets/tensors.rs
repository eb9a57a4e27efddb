//! Tensor lengths and indices: every buffer-taking call with fuzzed sizes (buffers always as long as declared).
#![no_main]
use acestep_runtime::*;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let ctx = common::ctx();
    let mut bytes = data.iter().copied().chain(std::iter::repeat(0));
    let mut num = |m: usize| -> usize {
        let v = u16::from_le_bytes([bytes.next().unwrap_or(0), bytes.next().unwrap_or(0)]) as usize;
        v % m
    };
    let (frames, batch, len) = (num(400), num(5), num(40_000));
    let (item, tile, decoded) = (num(6), num(6), num(60_000));
    let dt = f64::from(num(1000) as u32) / 997.0 - 0.3;
    let mut buf = vec![0.5f32; len];
    let other = vec![0.25f32; len];
    let seeds: Vec<u64> = (0..batch).map(|i| i as u64 * 7919).collect();
    common::check(unsafe { ace_noise(ctx, seeds.as_ptr(), batch, frames, buf.as_mut_ptr(), len) });
    common::check(unsafe { ace_context_latents(ctx, frames, batch, buf.as_mut_ptr(), len) });
    common::check(unsafe { ace_timbre_reference(ctx, batch, buf.as_mut_ptr(), len) });
    let p = buf.as_mut_ptr();
    common::check(unsafe { ace_scheduler_step(ctx, p, other.as_ptr(), len, dt, p) });
    let mut win = vec![0f32; num(20_000)];
    common::check(unsafe {
        ace_tile_window(ctx, other.as_ptr(), len, batch, frames, item, tile, win.as_mut_ptr(), win.len())
    });
    let (mut s, mut e) = (0usize, 0usize);
    common::check(unsafe { ace_tile_trim(ctx, frames, tile, decoded, &mut s, &mut e) });
    common::check(unsafe { ace_postprocess_audio(ctx, other.as_ptr(), len, batch, buf.as_mut_ptr()) });
});
