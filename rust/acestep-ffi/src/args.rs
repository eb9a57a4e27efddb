//! Checked views of C arguments: NULL pointers, lengths, alignment and UTF-8 become [`FfiError`]s naming the
//! argument, never undefined behaviour inside the library.

use std::ffi::{c_char, CStr, CString};

use serde_json::Value;

use crate::error::{AceStatus, FfiError, FfiResult};

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid for `'a`.
pub unsafe fn c_str<'a>(ptr: *const c_char, field: &str) -> FfiResult<&'a str> {
    if ptr.is_null() {
        return Err(FfiError::new(AceStatus::NullPointer, Some(field.into()), format!("{field} is NULL")));
    }
    CStr::from_ptr(ptr)
        .to_str()
        .map_err(|e| FfiError::new(AceStatus::InvalidUtf8, Some(field.into()), format!("{field} is not UTF-8: {e}")))
}

/// A JSON object argument.
///
/// # Safety
/// As [`c_str`].
pub unsafe fn json_object(ptr: *const c_char, field: &str) -> FfiResult<serde_json::Map<String, Value>> {
    let text = c_str(ptr, field)?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => {
            Err(FfiError::new(AceStatus::InvalidJson, Some(field.into()), format!("{field} must be a JSON object")))
        }
        Err(e) => Err(FfiError::new(AceStatus::InvalidJson, Some(field.into()), format!("{field}: {e}"))),
    }
}

fn check_ptr<T>(ptr: *const T, len: usize, field: &str) -> FfiResult<()> {
    if ptr.is_null() && len > 0 {
        return Err(FfiError::new(AceStatus::NullPointer, Some(field.into()), format!("{field} is NULL")));
    }
    if !ptr.is_null() && !(ptr as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(FfiError::arg(field, format!("{field} is not aligned to {} bytes", std::mem::align_of::<T>())));
    }
    if len.checked_mul(std::mem::size_of::<T>()).is_none_or(|b| b > isize::MAX as usize) {
        return Err(FfiError::new(
            AceStatus::LengthMismatch,
            Some(field.into()),
            format!("{field}: length {len} is too large"),
        ));
    }
    Ok(())
}

/// A read-only buffer of `len` elements (`len == 0` accepts NULL).
///
/// # Safety
/// A non-NULL `ptr` points to `len` initialised elements valid for `'a` and not written during the call.
pub unsafe fn slice<'a, T>(ptr: *const T, len: usize, field: &str) -> FfiResult<&'a [T]> {
    check_ptr(ptr, len, field)?;
    Ok(if len == 0 { &[] } else { std::slice::from_raw_parts(ptr, len) })
}

/// A writable buffer of `len` elements that aliases no other argument.
///
/// # Safety
/// A non-NULL `ptr` points to `len` writable elements valid for `'a`, not aliased by another argument.
pub unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize, field: &str) -> FfiResult<&'a mut [T]> {
    check_ptr(ptr, len, field)?;
    Ok(if len == 0 { &mut [] } else { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A required output pointer (`size_t *`, `char **`).
pub fn out_ptr<T>(ptr: *mut T, field: &str) -> FfiResult<*mut T> {
    check_ptr(ptr as *const T, 1, field)?;
    if ptr.is_null() {
        return Err(FfiError::new(AceStatus::NullPointer, Some(field.into()), format!("{field} is NULL")));
    }
    Ok(ptr)
}

/// `want` elements are needed in `field`, `got` were given.
pub fn expect_len(field: &str, got: usize, want: usize) -> FfiResult<()> {
    if got != want {
        return Err(FfiError::new(
            AceStatus::LengthMismatch,
            Some(field.into()),
            format!("{field} has {got} elements, this call needs exactly {want}"),
        ));
    }
    Ok(())
}

/// Hand a string to the caller (freed with `ace_string_free`).
pub fn into_c_string(text: String) -> *mut c_char {
    // serde_json escapes NUL, and our own messages hold none; a NUL would only truncate, never fail.
    let bytes: Vec<u8> = text.into_bytes().into_iter().filter(|&b| b != 0).collect();
    CString::new(bytes).map(CString::into_raw).unwrap_or(std::ptr::null_mut())
}

/// Write a JSON string into a `char **` out-argument.
pub fn write_json(out: *mut *mut c_char, value: &Value) -> FfiResult<()> {
    let out = out_ptr(out, "out_json")?;
    // SAFETY: `out` is non-NULL and aligned (checked); the caller guarantees it is writable.
    unsafe { *out = into_c_string(value.to_string()) };
    Ok(())
}
