//! Robustness without libFuzzer (runs on stable in `cargo test`): seeded random and mutated inputs into
//! every entry point family must give a known status and, on failure, a well-formed JSON error — never a
//! crash; and N threads x M contexts must compute exactly what one thread computes alone.
//! The libFuzzer targets in `fuzz/` run the same families for longer (docs/dll_api.md, "Robustness").

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use acestep_runtime::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn iterations() -> usize {
    std::env::var("ACESTEP_ROBUSTNESS_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(300)
}

fn fixture() -> (tempdir::Dir, *mut AceContext) {
    let dir = tempdir::Dir::new();
    acestep_runtime::testkit::write_fixture(dir.path()).expect("fixture");
    let config = CString::new(format!(r#"{{"onnx_dir": {:?}}}"#, dir.path().display().to_string())).expect("c");
    let ctx = unsafe { ace_create_context(config.as_ptr()) };
    assert!(!ctx.is_null(), "{}", last_error().unwrap_or_default());
    (dir, ctx)
}

mod tempdir {
    use std::path::{Path, PathBuf};
    pub struct Dir(PathBuf);
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "acestep-ffi-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).expect("temp dir");
            Self(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn take(s: *mut c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    let text = unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned();
    unsafe { ace_string_free(s) };
    Some(text)
}

fn last_error() -> Option<String> {
    take(ace_last_error())
}

/// A failed call left a JSON error with the four keys and the same code; a successful one none.
fn assert_contract(status: AceStatus) {
    let err = last_error();
    if status == AceStatus::Ok {
        assert!(err.is_none(), "success left an error: {err:?}");
        return;
    }
    assert_ne!(status, AceStatus::Internal, "a panic was caught: {err:?}");
    let err: serde_json::Value = serde_json::from_str(&err.expect("error JSON")).expect("valid JSON");
    assert_eq!(err["code"].as_i64(), Some(status as i64));
    for key in ["name", "message", "field"] {
        assert!(err.get(key).is_some(), "{err}");
    }
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for _ in 0..=rng.below(6) {
        let op = rng.below(4);
        let at = rng.below(bytes.len() as u64 + 1) as usize;
        match op {
            0 if !bytes.is_empty() => {
                bytes.remove(at.min(bytes.len() - 1));
            }
            1 => bytes.insert(at, rng.next() as u8),
            2 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                const ALPHABET: &[u8] = b"{}[]\",:0123456789.-eE truenullfalse\\\xff";
                bytes[i] = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
            }
            _ => bytes.truncate(at),
        }
    }
    bytes.retain(|&b| b != 0);
    bytes
}

#[test]
fn json_family_survives_mutated_inputs() {
    let (_dir, ctx) = fixture();
    let mut rng = Rng(0x5eed);
    let cases = [
        acestep_runtime::testkit::case_json(42, 6.0, 3.0),
        r#"{"id": "x", "task": "text2music", "seeds": [1, 2], "timesteps": [0.97, 0.5, 0], "bpm": 120}"#.into(),
    ];
    let states = [r#"{"shift": 2.5, "step": 3}"#, r#"{"timesteps": [1, 0.5, 0.25], "step": 1}"#];
    let mut ok = 0;
    for i in 0..iterations() {
        let case = CString::new(mutate(&mut rng, cases[i % 2].as_bytes())).expect("no NUL");
        let mut out: *mut c_char = ptr::null_mut();
        let status = unsafe { ace_prepare_request(ctx, case.as_ptr(), &mut out) };
        assert_contract(status);
        if status == AceStatus::Ok {
            ok += 1;
            let text = take(out).expect("out_json on success");
            serde_json::from_str::<serde_json::Value>(&text).expect("valid JSON out");
        } else {
            assert!(out.is_null());
        }
        // The simple-mode hand-off on the same mutated case (the fixture has no LM folder: an error, never a crash).
        let ids = [i as i64, -1, 7];
        let status = unsafe { ace_prepare_planned_request(ctx, case.as_ptr(), ids.as_ptr(), i % 4, &mut out) };
        assert_contract(status);
        if status != AceStatus::Ok {
            assert!(out.is_null());
        }
        take(out);
        let state = CString::new(mutate(&mut rng, states[i % 2].as_bytes())).expect("no NUL");
        let mut t = [0f32; 3];
        let status = unsafe { ace_prepare_step_inputs(ctx, state.as_ptr(), t.as_mut_ptr(), 3, &mut out) };
        assert_contract(status);
        take(out);
        let config = CString::new(mutate(&mut rng, br#"{"onnx_dir": "/nonexistent", "abi_version": 1}"#)).expect("c");
        let created = unsafe { ace_create_context(config.as_ptr()) };
        assert!(created.is_null());
        let err: serde_json::Value = serde_json::from_str(&last_error().expect("error")).expect("JSON error");
        assert!((1..=6).contains(&err["code"].as_i64().expect("code")), "{err}");
        let path = CString::new(mutate(&mut rng, b"tiles.0.win_end")).expect("c");
        let doc = CString::new(mutate(&mut rng, br#"{"tiles": [{"win_end": 3}], "a": [1, [2.5, true]]}"#)).expect("c");
        let mut vals = [0i64; 4];
        let mut n = 0usize;
        let status = unsafe { ace_json_i64(doc.as_ptr(), path.as_ptr(), vals.as_mut_ptr(), 4, &mut n) };
        assert_contract(status);
    }
    assert!(ok > 0, "no mutated case was valid: the mutation is too aggressive to test the success path");
    unsafe { ace_free_context(ctx) };
}

#[test]
fn tensor_family_checks_every_length() {
    let (_dir, ctx) = fixture();
    let mut rng = Rng(0xfeed);
    for _ in 0..iterations() {
        let frames = rng.below(300) as usize;
        let batch = rng.below(4) as usize;
        let want = batch * frames * 64;
        let len = if rng.below(2) == 0 { want } else { rng.below(want as u64 + 200) as usize };
        let mut buf = vec![0f32; len];
        let seeds: Vec<u64> = (0..batch).map(|_| rng.next()).collect();
        let status = unsafe { ace_noise(ctx, seeds.as_ptr(), batch, frames, buf.as_mut_ptr(), len) };
        assert_contract(status);
        assert_eq!(status == AceStatus::Ok, len == want && want > 0);
        let status = unsafe { ace_context_latents(ctx, frames, batch, buf.as_mut_ptr(), len) };
        assert_contract(status);
        let (item, tile) = (rng.below(5) as usize, rng.below(4) as usize);
        let mut win = vec![0f32; rng.below(64 * 260) as usize];
        let status =
            unsafe { ace_tile_window(ctx, buf.as_ptr(), len, batch, frames, item, tile, win.as_mut_ptr(), win.len()) };
        assert_contract(status);
        let (mut s, mut e) = (0usize, 0usize);
        let status = unsafe { ace_tile_trim(ctx, frames, tile, rng.below(1 << 20) as usize, &mut s, &mut e) };
        assert_contract(status);
        if status == AceStatus::Ok {
            assert!(s <= e);
        }
        let xt = vec![1f32; len];
        let status = unsafe { ace_scheduler_step(ctx, xt.as_ptr(), xt.as_ptr(), len, 0.125, buf.as_mut_ptr()) };
        assert_contract(status);
        let status = unsafe { ace_postprocess_audio(ctx, xt.as_ptr(), len, batch, buf.as_mut_ptr()) };
        assert_contract(status);
        let status = unsafe { ace_scheduler_step(ctx, ptr::null(), xt.as_ptr(), len, 0.1, buf.as_mut_ptr()) };
        assert_contract(status);
        assert_eq!(status == AceStatus::Ok, len == 0);
    }
    unsafe { ace_free_context(ctx) };
}

/// One run of the host logic of a case: the prepared request, the noise and eight scheduler steps.
fn run_once(ctx: *mut AceContext, seed: u64) -> (String, Vec<f32>) {
    let case = CString::new(acestep_runtime::testkit::case_json(seed, 6.0, 3.0)).expect("c");
    let mut out: *mut c_char = ptr::null_mut();
    assert_eq!(unsafe { ace_prepare_request(ctx, case.as_ptr(), &mut out) }, AceStatus::Ok);
    let request = take(out).expect("json");
    let frames = 150;
    let mut xt = vec![0f32; frames * 64];
    assert_eq!(unsafe { ace_noise(ctx, &seed, 1, frames, xt.as_mut_ptr(), xt.len()) }, AceStatus::Ok);
    let vt: Vec<f32> = xt.iter().map(|x| x * 0.5 - 0.1).collect();
    for step in 0..8 {
        let state = CString::new(format!(r#"{{"shift": 3, "step": {step}}}"#)).expect("c");
        let mut t = [0f32; 1];
        assert_eq!(unsafe { ace_prepare_step_inputs(ctx, state.as_ptr(), t.as_mut_ptr(), 1, &mut out) }, AceStatus::Ok);
        let info: serde_json::Value = serde_json::from_str(&take(out).expect("json")).expect("json");
        let dt = info["dt"].as_f64().expect("dt");
        let p = xt.as_mut_ptr();
        assert_eq!(unsafe { ace_scheduler_step(ctx, p, vt.as_ptr(), xt.len(), dt, p) }, AceStatus::Ok);
    }
    (request, xt)
}

#[test]
fn threads_by_contexts_equal_serial() {
    const THREADS: usize = 4;
    const CONTEXTS: usize = 3;
    let (_dir, ctx) = fixture();
    let serial: Vec<_> = (0..THREADS as u64).map(|seed| run_once(ctx, seed)).collect();
    let fixtures: Vec<_> = (0..CONTEXTS).map(|_| fixture()).collect();
    let ptrs: Vec<usize> = fixtures.iter().map(|(_, c)| *c as usize).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                let ptrs = ptrs.clone();
                scope.spawn(move || {
                    let mut results = Vec::new();
                    for round in 0..3 {
                        // every thread uses every context, so contexts are shared across threads too
                        let c = ptrs[(thread + round) % CONTEXTS] as *mut AceContext;
                        results.push(run_once(c, thread as u64));
                    }
                    results
                })
            })
            .collect();
        for (thread, handle) in handles.into_iter().enumerate() {
            for result in handle.join().expect("thread") {
                assert_eq!(result, serial[thread], "thread {thread} differs from the serial run");
            }
        }
    });
    for (_, c) in fixtures {
        unsafe { ace_free_context(c) };
    }
    unsafe { ace_free_context(ctx) };
}
