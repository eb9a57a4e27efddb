//! Status codes and the thread-local last error: every entry point returns an [`AceStatus`] (or NULL) and
//! leaves a structured JSON error `{"code", "name", "message", "field"}` for `ace_last_error`.

use std::cell::RefCell;

use serde_json::json;

/// Result of every fallible entry point; 0 is success.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AceStatus {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullPointer = 1,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 2,
    /// A JSON argument did not parse, or was not the expected JSON type.
    InvalidJson = 3,
    /// A value was out of range or inconsistent (a case field, a step index, an unknown key).
    InvalidArgument = 4,
    /// A buffer length did not match what the call needs.
    LengthMismatch = 5,
    /// A file named by the configuration is missing or unreadable.
    Io = 6,
    /// A bug inside the library (a caught panic); the context stays usable.
    Internal = 7,
}

impl AceStatus {
    pub fn name(self) -> &'static str {
        match self {
            AceStatus::Ok => "ok",
            AceStatus::NullPointer => "null_pointer",
            AceStatus::InvalidUtf8 => "invalid_utf8",
            AceStatus::InvalidJson => "invalid_json",
            AceStatus::InvalidArgument => "invalid_argument",
            AceStatus::LengthMismatch => "length_mismatch",
            AceStatus::Io => "io",
            AceStatus::Internal => "internal",
        }
    }
}

/// An error on its way to the caller: status, message and the argument or JSON field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfiError {
    pub code: AceStatus,
    pub message: String,
    pub field: Option<String>,
}

impl FfiError {
    pub fn new(code: AceStatus, field: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: field.into() }
    }

    pub fn arg(field: &str, message: impl Into<String>) -> Self {
        Self::new(AceStatus::InvalidArgument, Some(field.to_string()), message)
    }

    pub fn to_json(&self) -> String {
        json!({"code": self.code as i32, "name": self.code.name(), "message": self.message, "field": self.field})
            .to_string()
    }
}

pub type FfiResult<T> = Result<T, FfiError>;

thread_local! {
    static LAST_ERROR: RefCell<Option<FfiError>> = const { RefCell::new(None) };
}

pub fn set_last_error(err: FfiError) {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(err));
}

pub fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

pub fn last_error() -> Option<FfiError> {
    LAST_ERROR.with(|e| e.borrow().clone())
}

/// Run an entry point's body: clear the last error, catch panics, turn an error into its status.
pub fn guard<F: FnOnce() -> FfiResult<()>>(body: F) -> AceStatus {
    clear_last_error();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => AceStatus::Ok,
        Ok(Err(err)) => {
            let code = err.code;
            set_last_error(err);
            code
        }
        Err(payload) => {
            set_last_error(panic_error(payload));
            AceStatus::Internal
        }
    }
}

pub fn panic_error(payload: Box<dyn std::any::Any + Send>) -> FfiError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    FfiError::new(AceStatus::Internal, None, format!("internal error (caught panic): {what}"))
}
