//! One ONNX Runtime session per graph, opened with the options of the Python runtime
//! (`runtimes/py_ort/acestep_ort/session_manager.py: SessionConfig`) and checked against the I/O contract in the
//! folder's `manifest.json` before anything runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynValue, TensorElementType, ValueType};
use serde_json::Value;
use thiserror::Error;

pub const GRAPHS: [&str; 5] = ["text_encoder", "lyric_embedding", "condition_encoder", "dit_decoder", "vae_decoder"];

#[derive(Debug, Error)]
pub enum SessionError {
    #[error("missing graph {path}; export it with `acestep-export --out {dir}`")]
    MissingGraph { path: PathBuf, dir: PathBuf },
    #[error("{0}")]
    Contract(String),
    #[error("{path}: {message}")]
    Ort { path: PathBuf, message: String },
    #[error("{graph}.onnx: {message}")]
    Run { graph: String, message: String },
    #[error(transparent)]
    Digest(#[from] acestep_core::digests::DigestError),
}

/// Session options shared by every graph; the defaults are py_ort's (`SessionConfig`).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// 0 = ONNX Runtime's default (one thread per physical core), like Python's `intra_op_num_threads = 0`.
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// "disable" | "basic" | "extended" | "all"
    pub optimization: String,
    /// ORT's CPU memory arena; off like py_ort's (each run's planned block is returned after the run instead of
    /// every session holding its high-water mark for the life of the process: docs/performance.md).
    pub cpu_mem_arena: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let threads = std::env::var("ACESTEP_ORT_THREADS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        Self { intra_op_threads: threads, inter_op_threads: 1, optimization: "all".into(), cpu_mem_arena: false }
    }
}

impl SessionConfig {
    fn level(&self) -> Result<GraphOptimizationLevel, SessionError> {
        Ok(match self.optimization.as_str() {
            "disable" => GraphOptimizationLevel::Disable,
            "basic" => GraphOptimizationLevel::Level1,
            "extended" => GraphOptimizationLevel::Level2,
            "all" => GraphOptimizationLevel::All,
            other => {
                return Err(SessionError::Contract(format!(
                    "unknown optimization level {other:?} (disable, basic, extended, all)"
                )))
            }
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "intra_op_threads={} ({}), inter_op_threads={}, execution_mode=sequential, graph_optimization_level={}, \
             cpu_mem_arena={}",
            self.intra_op_threads,
            if self.intra_op_threads == 0 { "ORT default" } else { "fixed" },
            self.inter_op_threads,
            self.optimization,
            self.cpu_mem_arena
        )
    }
}

/// numpy's name of an ONNX element type (the manifest's `dtype`).
pub fn dtype_name(t: TensorElementType) -> &'static str {
    match t {
        TensorElementType::Float32 => "float32",
        TensorElementType::Float64 => "float64",
        TensorElementType::Float16 => "float16",
        TensorElementType::Int64 => "int64",
        TensorElementType::Int32 => "int32",
        TensorElementType::Int8 => "int8",
        TensorElementType::Uint8 => "uint8",
        TensorElementType::Bool => "bool",
        _ => "other",
    }
}

/// One declared input or output of a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Io {
    pub name: String,
    pub dtype: String,
    pub rank: usize,
}

fn io_of(outlets: &[ort::value::Outlet]) -> Vec<Io> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => {
                Io { name: o.name().to_string(), dtype: dtype_name(*ty).into(), rank: shape.len() }
            }
            _ => Io { name: o.name().to_string(), dtype: "non-tensor".into(), rank: 0 },
        })
        .collect()
}

/// Names (in order), dtypes and ranks of a graph's I/O against the manifest's contract.
pub fn check_contract(graph: &str, declared: &Value, inputs: &[Io], outputs: &[Io]) -> Result<(), SessionError> {
    for (kind, actual) in [("inputs", inputs), ("outputs", outputs)] {
        let want: Vec<(String, Option<String>, Option<usize>)> = declared[kind]
            .as_array()
            .into_iter()
            .flatten()
            .map(|io| {
                (
                    io["name"].as_str().unwrap_or("").to_string(),
                    io["dtype"].as_str().map(String::from),
                    io["shape"].as_array().map(Vec::len),
                )
            })
            .collect();
        let want_names: Vec<&str> = want.iter().map(|w| w.0.as_str()).collect();
        let got_names: Vec<&str> = actual.iter().map(|g| g.name.as_str()).collect();
        if want_names != got_names {
            return Err(SessionError::Contract(format!(
                "{graph}.onnx {kind} {got_names:?} do not match the contract {want_names:?} (manifest.json / \
                 docs/io_contract.md)"
            )));
        }
        for ((name, dtype, rank), got) in want.iter().zip(actual) {
            if let Some(d) = dtype {
                if *d != got.dtype {
                    return Err(SessionError::Contract(format!(
                        "{graph}.onnx {} {name:?} is {}, the contract says {d}",
                        &kind[..kind.len() - 1],
                        got.dtype
                    )));
                }
            }
            if let Some(r) = rank {
                if *r != got.rank {
                    return Err(SessionError::Contract(format!(
                        "{graph}.onnx {} {name:?} has rank {}, the contract says {r}",
                        &kind[..kind.len() - 1],
                        got.rank
                    )));
                }
            }
        }
    }
    Ok(())
}

/// An open graph: its session, declared I/O and the time spent in `Session::run`.
pub struct Graph {
    pub name: String,
    pub session: Session,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    pub run_seconds: f64,
    pub calls: usize,
}

impl Graph {
    pub fn open(
        env: &ort::environment::Environment,
        dir: &Path,
        name: &str,
        config: &SessionConfig,
        manifest: Option<&Value>,
    ) -> Result<Self, SessionError> {
        let path = dir.join(format!("{name}.onnx"));
        if !path.is_file() {
            return Err(SessionError::MissingGraph { path, dir: dir.to_path_buf() });
        }
        if let Some(manifest) = manifest {
            // every file the manifest lists for this graph, and the assets: a damaged folder is refused here
            acestep_core::digests::verify_folder(dir, manifest, Some(&[name]))?;
        }
        let err = |message: String| SessionError::Ort { path: path.clone(), message };
        let session = Session::builder(env)
            .map_err(|e| err(e.to_string()))?
            .with_optimization_level(config.level()?)
            .map_err(|e| err(e.to_string()))?
            .with_intra_threads(config.intra_op_threads)
            .map_err(|e| err(e.to_string()))?
            .with_inter_threads(config.inter_op_threads)
            .map_err(|e| err(e.to_string()))?
            .with_parallel_execution(false)
            .map_err(|e| err(e.to_string()))?
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(config.cpu_mem_arena).build()])
            .map_err(|e| err(e.to_string()))?
            .commit_from_file(&path)
            .map_err(|e| err(e.to_string()))?;
        let inputs = io_of(session.inputs());
        let outputs = io_of(session.outputs());
        if let Some(declared) = manifest.and_then(|m| m.get("graphs")).and_then(|g| g.get(name)) {
            check_contract(name, declared, &inputs, &outputs)?;
        }
        Ok(Self { name: name.into(), session, inputs, outputs, run_seconds: 0.0, calls: 0 })
    }

    /// The declared dtype of an input.
    pub fn input_dtype(&self, input: &str) -> Result<&str, SessionError> {
        self.inputs
            .iter()
            .find(|i| i.name == input)
            .map(|i| i.dtype.as_str())
            .ok_or_else(|| SessionError::Run { graph: self.name.clone(), message: format!("has no input {input:?}") })
    }

    /// Run with named inputs; returns the outputs in declared order.
    pub fn run(&mut self, feeds: Vec<(String, DynValue)>) -> Result<Vec<DynValue>, SessionError> {
        let want: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        let mut got: Vec<&str> = feeds.iter().map(|f| f.0.as_str()).collect();
        got.sort_unstable();
        let mut sorted_want = want.clone();
        sorted_want.sort_unstable();
        if got != sorted_want {
            return Err(SessionError::Run {
                graph: self.name.clone(),
                message: format!("expects inputs {sorted_want:?}, got {got:?}"),
            });
        }
        let start = Instant::now();
        let inputs: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> =
            feeds.into_iter().map(|(n, v)| (std::borrow::Cow::Owned(n), v.into())).collect();
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| SessionError::Run { graph: self.name.clone(), message: e.to_string() })?;
        let names: Vec<String> = self.outputs.iter().map(|o| o.name.clone()).collect();
        let mut out = Vec::with_capacity(names.len());
        let mut outputs = outputs;
        for n in &names {
            let v = outputs.remove(n.as_str()).ok_or_else(|| SessionError::Run {
                graph: self.name.clone(),
                message: format!("returned no output {n:?}"),
            })?;
            out.push(v);
        }
        self.run_seconds += start.elapsed().as_secs_f64();
        self.calls += 1;
        Ok(out)
    }
}

/// Every graph of a folder, opened and checked.
pub struct Sessions {
    pub graphs: BTreeMap<String, Graph>,
}

impl Sessions {
    pub fn open(
        env: &ort::environment::Environment,
        dir: &Path,
        names: &[&str],
        config: &SessionConfig,
        manifest: Option<&Value>,
    ) -> Result<Self, SessionError> {
        let mut graphs = BTreeMap::new();
        for name in names {
            graphs.insert((*name).to_string(), Graph::open(env, dir, name, config, manifest)?);
        }
        Ok(Self { graphs })
    }

    pub fn get(&mut self, name: &str) -> Result<&mut Graph, SessionError> {
        self.graphs
            .get_mut(name)
            .ok_or_else(|| SessionError::Run { graph: name.into(), message: "was not opened".into() })
    }

    /// Seconds spent inside `Session::run`, per graph.
    pub fn run_seconds(&self) -> BTreeMap<String, (f64, usize)> {
        self.graphs.iter().map(|(n, g)| (n.clone(), (g.run_seconds, g.calls))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn io(name: &str, dtype: &str, rank: usize) -> Io {
        Io { name: name.into(), dtype: dtype.into(), rank }
    }

    #[test]
    fn contract_names_dtypes_and_ranks() {
        let declared = json!({
            "inputs": [{"name": "latents", "dtype": "float32", "shape": ["B", 64, "T"]}],
            "outputs": [{"name": "audio", "dtype": "float32", "shape": ["B", 2, "1920*T"]}]
        });
        let out = [io("audio", "float32", 3)];
        assert!(check_contract("vae_decoder", &declared, &[io("latents", "float32", 3)], &out).is_ok());
        let e = check_contract("vae_decoder", &declared, &[io("x", "float32", 3)], &out).expect_err("name");
        assert!(e.to_string().contains("vae_decoder.onnx inputs [\"x\"] do not match the contract [\"latents\"]"));
        let e = check_contract("vae_decoder", &declared, &[io("latents", "int64", 3)], &out).expect_err("dtype");
        assert!(e.to_string().contains("input \"latents\" is int64, the contract says float32"));
        let e = check_contract("vae_decoder", &declared, &[io("latents", "float32", 2)], &out).expect_err("rank");
        assert!(e.to_string().contains("has rank 2, the contract says 3"));
    }

    #[test]
    fn optimization_levels() {
        let mut c = SessionConfig::default();
        for level in ["disable", "basic", "extended", "all"] {
            c.optimization = level.into();
            assert!(c.level().is_ok());
        }
        c.optimization = "max".into();
        assert!(c.level().is_err());
    }
}
