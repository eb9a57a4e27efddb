//! ACE-Step 1.5 text2music on ONNX Runtime, without Python: the graphs of an exported ONNX folder driven by
//! the host logic of `acestep-core`, on the very `libonnxruntime` the Python runtime loads (see
//! `docs/rust_ort_runtime.md`).

pub mod audio_io;
pub mod cli;
pub mod dylib;
pub mod lm;
pub mod pipeline;
pub mod sessions;
pub mod tensor;
pub mod tokenizer;
pub mod vae;
