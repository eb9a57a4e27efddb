//! What the two binaries share: the ONNX Runtime options (`--onnx-dir`, `--ort-dylib`, `--threads`,
//! `--optimization`), the default ONNX folder, opening the engine and the LM, and the one-line error exit.
//! `generate` is the user CLI (`src/bin/generate.rs`); `acestep-harness` speaks the test harness's protocol
//! (`src/bin/acestep-harness.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use crate::dylib::{self, LoadedRuntime};
use crate::lm::OrtLm;
use crate::pipeline::Engine;
use crate::sessions::SessionConfig;

#[derive(Args, Clone)]
pub struct OrtArgs {
    /// Exported ONNX folder (graphs, manifest.json, tokenizer, silence_latent.npy); default $ACESTEP_ONNX_DIR,
    /// else the newest .cache/artifacts/<checkpoint id>/fp32 (what `make run` exports)
    #[arg(long, env = "ACESTEP_ONNX_DIR")]
    pub onnx_dir: Option<PathBuf>,
    /// libonnxruntime.so.<version> to load (else $ORT_DYLIB_PATH, beside the binary, the project's .venv)
    #[arg(long)]
    pub ort_dylib: Option<PathBuf>,
    /// Intra-op threads (0 = ONNX Runtime's default); default $ACESTEP_ORT_THREADS or 0, as the Python runtime
    #[arg(long)]
    pub threads: Option<usize>,
    /// Graph optimization level: disable, basic, extended, all (the Python runtime's default)
    #[arg(long, default_value = "all")]
    pub optimization: String,
}

pub fn session_config(ort: &OrtArgs) -> SessionConfig {
    let mut config = SessionConfig::default();
    if let Some(t) = ort.threads {
        config.intra_op_threads = t;
    }
    config.optimization = ort.optimization.clone();
    config
}

/// `--onnx-dir`, else `$ACESTEP_ONNX_DIR`, else the folder the project's tooling exported last:
/// `<cache>/artifacts/<checkpoint id>/fp32` with `<cache>` = `$ACESTEP_PARITY_CACHE` or `.cache` in the current
/// directory or a parent (what `make run` / pytest leave behind).
pub fn onnx_dir(ort: &OrtArgs) -> Result<PathBuf> {
    if let Some(dir) = &ort.onnx_dir {
        return Ok(dir.clone());
    }
    let caches: Vec<PathBuf> = match std::env::var_os("ACESTEP_PARITY_CACHE") {
        Some(c) => vec![PathBuf::from(c)],
        None => {
            std::env::current_dir().map(|cwd| cwd.ancestors().map(|d| d.join(".cache")).collect()).unwrap_or_default()
        }
    };
    for cache in caches {
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache.join("artifacts"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("fp32")))
            .filter_map(|d| std::fs::metadata(d.join("manifest.json")).and_then(|m| m.modified()).ok().map(|t| (t, d)))
            .collect();
        found.sort();
        if let Some((_, dir)) = found.pop() {
            eprintln!("using the exported ONNX folder {} (pass --onnx-dir to choose another)", dir.display());
            return Ok(dir);
        }
    }
    bail!(
        "no ONNX folder: pass --onnx-dir DIR or set ACESTEP_ONNX_DIR (export one with `acestep-export --out DIR`, \
         or run `make run`, which exports into .cache/artifacts/<checkpoint id>/fp32)"
    )
}

pub fn load_runtime(ort: &OrtArgs) -> Result<(LoadedRuntime, ort::environment::Environment)> {
    Ok(dylib::load(ort.ort_dylib.as_deref())?)
}

pub fn open_engine(ort: &OrtArgs, graphs: Option<&[&str]>) -> Result<Engine> {
    Ok(open_engine_env(ort, graphs)?.0)
}

/// The engine and the ONNX Runtime environment (kept to open the LM graphs later).
pub fn open_engine_env(ort: &OrtArgs, graphs: Option<&[&str]>) -> Result<(Engine, ort::environment::Environment)> {
    let dir = onnx_dir(ort)?;
    let config = session_config(ort);
    let (runtime, env) = load_runtime(ort)?;
    let engine = Engine::open(&dir, runtime, &env, config, graphs)?;
    Ok((engine, env))
}

pub fn open_lm(engine: &Engine, env: &ort::environment::Environment) -> Result<OrtLm> {
    OrtLm::open(env, &engine.dir, &engine.config, engine.manifest.as_ref())
}

/// Run a binary's body: errors are one line on stderr (`<name>: error: ...`) and exit code 2; a panic is one
/// line too (`<name>: internal error: ...`) and exit code 101, never a backtrace.
pub fn main_with(name: &'static str, body: impl FnOnce() -> Result<()> + std::panic::UnwindSafe) -> ExitCode {
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("{name}: internal error: {info}");
    }));
    match std::panic::catch_unwind(body) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::from(2)
        }
        Err(_) => ExitCode::from(101),
    }
}
