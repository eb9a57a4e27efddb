// Shared by the targets: one context on the test fixture (tiny tokenizer + silence latent), created once.
// Not every target uses every helper.
#![allow(dead_code)]
use std::ffi::CString;
use std::sync::OnceLock;

use acestep_runtime::*;

pub struct Ctx(pub *mut AceContext);
unsafe impl Send for Ctx {}
unsafe impl Sync for Ctx {}

pub fn ctx() -> *mut AceContext {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        // ACESTEP_FUZZ_ONNX_DIR: an exported folder (with its LM files) instead of the tiny fixture.
        let dir = match std::env::var_os("ACESTEP_FUZZ_ONNX_DIR") {
            Some(d) => std::path::PathBuf::from(d),
            None => {
                let dir = std::env::temp_dir().join(format!("acestep-ffi-fuzz-{}", std::process::id()));
                acestep_runtime::testkit::write_fixture(&dir).expect("fixture");
                dir
            }
        };
        let config = CString::new(format!(r#"{{"onnx_dir": {:?}}}"#, dir.display().to_string())).expect("c");
        let ctx = unsafe { ace_create_context(config.as_ptr()) };
        assert!(!ctx.is_null());
        Ctx(ctx)
    })
    .0
}

/// A failed call must leave a JSON error and never report a caught panic.
pub fn check(status: AceStatus) {
    assert_ne!(status, AceStatus::Internal, "a panic inside the library");
    let err = ace_last_error();
    assert_eq!(status == AceStatus::Ok, err.is_null());
    unsafe { ace_string_free(err) };
}

pub fn c_string(bytes: &[u8]) -> CString {
    CString::new(bytes.iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>()).expect("no NUL")
}

/// The LM vocabulary size when the context has an LM folder (from one `ace_lm_reset`), else None.
pub fn vocab_size(ctx: *mut AceContext) -> Option<usize> {
    static V: OnceLock<Option<usize>> = OnceLock::new();
    *V.get_or_init(|| {
        let options = c_string(br#"{"query": "fuzz"}"#);
        let mut out: *mut std::ffi::c_char = std::ptr::null_mut();
        if unsafe { ace_lm_reset(ctx, options.as_ptr(), &mut out) } != AceStatus::Ok {
            unsafe { ace_string_free(ace_last_error()) };
            return None;
        }
        let text = unsafe { std::ffi::CStr::from_ptr(out) }.to_string_lossy().into_owned();
        unsafe { ace_string_free(out) };
        let key = "\"vocab_size\":";
        let at = text.find(key)? + key.len();
        text[at..].split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
    })
}
