//! Finding and loading `libonnxruntime` at run time (the `ort` crate's `load-dynamic`; nothing is ever
//! downloaded). Search order, first hit wins:
//!
//! 1. an explicit path (`generate --ort-dylib PATH`);
//! 2. `$ORT_DYLIB_PATH` (an error if it names a file that does not exist);
//! 3. beside the executable: `libonnxruntime.so*` (how a Python-free install ships it);
//! 4. the Python environment of `$VIRTUAL_ENV`, then a `.venv` in the current directory or any parent, then a
//!    `.venv` in the executable's directory or any parent: `lib/python3*/site-packages/onnxruntime/capi/
//!    libonnxruntime.so.<version>` (the pip wheel's own copy, the very file Python's onnxruntime runs).

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The oldest ONNX Runtime the crate is built for (`ort` feature `api-23`).
pub const MIN_ORT_MINOR: u32 = 23;
const LIB_PREFIX: &str = "libonnxruntime.so";

#[derive(Debug, Error)]
pub enum DylibError {
    #[error(
        "ORT_DYLIB_PATH={0} does not exist; point it at the libonnxruntime.so.<version> of an onnxruntime \
         >= 1.{MIN_ORT_MINOR} install (e.g. <venv>/lib/python3.X/site-packages/onnxruntime/capi/) or unset it"
    )]
    EnvMissing(PathBuf),
    #[error("--ort-dylib {0} does not exist")]
    ArgMissing(PathBuf),
    #[error(
        "no ONNX Runtime library found (searched: {searched}). Install the Python wheel in the project's venv \
         (`make setup` or `pip install onnxruntime==1.23.2`), or set ORT_DYLIB_PATH to a \
         libonnxruntime.so.<version> (>= 1.{MIN_ORT_MINOR}), or copy that file beside the `generate` binary"
    )]
    NotFound { searched: String },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Load { path: PathBuf, message: String },
}

/// A loaded ONNX Runtime: the file and the version it reports.
#[derive(Debug, Clone)]
pub struct LoadedRuntime {
    pub path: PathBuf,
    pub version: String,
    pub source: &'static str,
}

fn candidates_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(LIB_PREFIX)))
        .collect();
    // Prefer the most specific name (libonnxruntime.so.1.23.2 over libonnxruntime.so.1).
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found
}

fn in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
        .collect();
    pythons.sort();
    pythons.iter().find_map(|py| candidates_in(&py.join("site-packages/onnxruntime/capi")).into_iter().next())
}

fn venv_upwards(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| in_venv(&dir.join(".venv")))
}

/// Where the library is, following the search order of the module docs.
pub fn locate(explicit: Option<&Path>) -> Result<(PathBuf, &'static str), DylibError> {
    if let Some(p) = explicit {
        return if p.is_file() { Ok((p.to_path_buf(), "--ort-dylib")) } else { Err(DylibError::ArgMissing(p.into())) };
    }
    if let Some(value) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(value);
        return if p.is_file() { Ok((p, "ORT_DYLIB_PATH")) } else { Err(DylibError::EnvMissing(p)) };
    }
    let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    let mut searched = vec!["--ort-dylib", "ORT_DYLIB_PATH"].into_iter().map(String::from).collect::<Vec<_>>();
    if let Some(dir) = &exe_dir {
        if let Some(p) = candidates_in(dir).into_iter().next() {
            return Ok((p, "beside the executable"));
        }
        searched.push(format!("{}/{LIB_PREFIX}*", dir.display()));
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        if let Some(p) = in_venv(Path::new(&venv)) {
            return Ok((p, "$VIRTUAL_ENV"));
        }
        searched.push(format!("$VIRTUAL_ENV={}", Path::new(&venv).display()));
    }
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(p) = venv_upwards(&cwd) {
            return Ok((p, ".venv above the current directory"));
        }
        searched.push(format!(".venv in {} and its parents", cwd.display()));
    }
    if let Some(dir) = &exe_dir {
        if let Some(p) = venv_upwards(dir) {
            return Ok((p, ".venv above the executable"));
        }
        searched.push(format!(".venv in {} and its parents", dir.display()));
    }
    Err(DylibError::NotFound { searched: searched.join("; ") })
}

/// The version string the library reports (`OrtGetApiBase()->GetVersionString()`).
fn version_of(path: &Path) -> Result<String, DylibError> {
    let load = |message: String| DylibError::Load { path: path.to_path_buf(), message };
    // SAFETY: loading the library runs its initialisers; it is the same file ORT itself loads next.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| load(e.to_string()))?;
    // SAFETY: the symbol has this C signature in every ONNX Runtime release.
    let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }.map_err(|_| load("it does not export OrtGetApiBase".into()))?;
    // SAFETY: OrtGetApiBase returns a pointer to a static struct, GetVersionString a static C string.
    let version = unsafe {
        let base = get_base();
        if base.is_null() {
            return Err(load("OrtGetApiBase returned null".into()));
        }
        std::ffi::CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned()
    };
    std::mem::forget(lib); // keep it loaded for the process, as ort does
    Ok(version)
}

/// Locate, check and load ONNX Runtime, and build the `ort` environment on it.
pub fn load(explicit: Option<&Path>) -> Result<(LoadedRuntime, ort::environment::Environment), DylibError> {
    let (path, source) = locate(explicit)?;
    let version = version_of(&path)?;
    let minor = version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
    if minor < MIN_ORT_MINOR {
        return Err(DylibError::Load {
            path,
            message: format!(
                "it is ONNX Runtime {version}; this build needs >= 1.{MIN_ORT_MINOR} (the pinned wheel is 1.23.2: \
                 `pip install onnxruntime==1.23.2`)"
            ),
        });
    }
    let builder = ort::init_from(&path).map_err(|e| DylibError::Load { path: path.clone(), message: e.to_string() })?;
    let env = builder
        .with_name("acestep-ort")
        .build()
        .map_err(|e| DylibError::Load { path: path.clone(), message: e.to_string() })?;
    Ok((LoadedRuntime { path, version, source }, env))
}
