//! Named host arrays (the capture points) and their npz form: the same names, dtypes and shapes as
//! Python's `Captures.arrays` (`runtimes/py_ort/acestep_ort/host/pipeline.py`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{NpzReader, WriteNpyExt};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ArrayError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{0}")]
    Shape(String),
}

/// One host array: float32, float64, int64, bool or numpy unicode strings (`<U{n}`, the LM's text captures),
/// row-major.
#[derive(Debug, Clone)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I64(ArrayD<i64>),
    Bool(ArrayD<bool>),
    /// Shape and the strings in row-major order (`np.asarray(str)` is 0-d: shape `[]`, one string).
    Str(Vec<usize>, Vec<String>),
}

impl Tensor {
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Result<Self, ArrayError> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(Tensor::F32)
            .map_err(|e| ArrayError::Shape(format!("shape {shape:?}: {e}")))
    }

    pub fn f64(shape: &[usize], data: Vec<f64>) -> Result<Self, ArrayError> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(Tensor::F64)
            .map_err(|e| ArrayError::Shape(format!("shape {shape:?}: {e}")))
    }

    pub fn i64(shape: &[usize], data: Vec<i64>) -> Result<Self, ArrayError> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(Tensor::I64)
            .map_err(|e| ArrayError::Shape(format!("shape {shape:?}: {e}")))
    }

    pub fn bool(shape: &[usize], data: Vec<bool>) -> Result<Self, ArrayError> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(Tensor::Bool)
            .map_err(|e| ArrayError::Shape(format!("shape {shape:?}: {e}")))
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::F64(a) => a.shape(),
            Tensor::I64(a) => a.shape(),
            Tensor::Bool(a) => a.shape(),
            Tensor::Str(shape, _) => shape,
        }
    }

    pub fn dtype(&self) -> &'static str {
        match self {
            Tensor::F32(_) => "float32",
            Tensor::F64(_) => "float64",
            Tensor::I64(_) => "int64",
            Tensor::Bool(_) => "bool",
            Tensor::Str(..) => "str",
        }
    }

    /// Values as f64 (for comparisons; strings have none).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Tensor::F32(a) => a.iter().map(|&x| x as f64).collect(),
            Tensor::F64(a) => a.iter().copied().collect(),
            Tensor::Str(..) => Vec::new(),
            Tensor::I64(a) => a.iter().map(|&x| x as f64).collect(),
            Tensor::Bool(a) => a.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }
}

/// Ordered named arrays (insertion order = Python's dict order).
#[derive(Debug, Clone, Default)]
pub struct Arrays {
    pub items: Vec<(String, Tensor)>,
}

impl Arrays {
    pub fn insert(&mut self, name: &str, t: Tensor) {
        if let Some(slot) = self.items.iter_mut().find(|(n, _)| n == name) {
            slot.1 = t;
        } else {
            self.items.push((name.to_string(), t));
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Write every array to an (uncompressed) `.npz`, each as `<name>.npy` like `numpy.savez`.
    pub fn write_npz(&self, path: &Path) -> Result<(), ArrayError> {
        let io = |message: String| ArrayError::Io { path: path.display().to_string(), message };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io(e.to_string()))?;
        }
        let file = File::create(path).map_err(|e| io(e.to_string()))?;
        // entries in insertion order, stored, like `numpy.savez`; ndarray-npy writes the numeric `.npy` bytes, the
        // unicode ones (which it lacks) are written by `unicode_npy`
        let mut zip = zip::ZipWriter::new(BufWriter::new(file));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, t) in &self.items {
            let mut bytes = Vec::new();
            let r = match t {
                Tensor::F32(a) => a.write_npy(&mut bytes),
                Tensor::F64(a) => a.write_npy(&mut bytes),
                Tensor::I64(a) => a.write_npy(&mut bytes),
                Tensor::Bool(a) => a.write_npy(&mut bytes),
                Tensor::Str(shape, values) => {
                    bytes = unicode_npy(shape, values);
                    Ok(())
                }
            };
            r.map_err(|e| io(format!("{name}: {e}")))?;
            let large = bytes.len() as u64 >= u64::from(u32::MAX);
            zip.start_file(format!("{name}.npy"), options.large_file(large)).map_err(|e| io(format!("{name}: {e}")))?;
            zip.write_all(&bytes).map_err(|e| io(format!("{name}: {e}")))?;
        }
        zip.finish().map_err(|e| io(e.to_string()))?.flush().map_err(|e| io(e.to_string()))?;
        Ok(())
    }
}

/// The `.npy` bytes of a numpy unicode array (`<U{n}`: UTF-32LE, every item padded to the longest, n >= 1), as
/// `np.save(np.asarray(strings))` writes them (format 1.0, header padded to 64 bytes).
pub fn unicode_npy(shape: &[usize], values: &[String]) -> Vec<u8> {
    let width = values.iter().map(|v| v.chars().count()).max().unwrap_or(0).max(1);
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<U{width}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        let mut n = 0;
        for c in v.chars() {
            out.extend_from_slice(&(c as u32).to_le_bytes());
            n += 1;
        }
        out.extend(std::iter::repeat_n(0u8, 4 * (width - n)));
    }
    out
}

/// An `.npz` opened for reading arrays by name.
pub struct NpzFile {
    path: String,
    reader: NpzReader<File>,
    names: Vec<String>,
}

impl NpzFile {
    pub fn open(path: &Path) -> Result<Self, ArrayError> {
        let io = |message: String| ArrayError::Io { path: path.display().to_string(), message };
        let file = File::open(path).map_err(|e| io(e.to_string()))?;
        let mut reader = NpzReader::new(file).map_err(|e| io(e.to_string()))?;
        let names = reader.names().map_err(|e| io(e.to_string()))?;
        Ok(Self { path: path.display().to_string(), reader, names })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn err(&self, name: &str, message: String) -> ArrayError {
        ArrayError::Io { path: self.path.clone(), message: format!("array {name:?}: {message}") }
    }

    pub fn f32(&mut self, name: &str) -> Result<ArrayD<f32>, ArrayError> {
        if !self.names.iter().any(|n| n == name) {
            return Err(self.err(name, format!("missing (the file has {:?})", self.names)));
        }
        let r = self.reader.by_name(name);
        r.map_err(|e| self.err(name, format!("{e} (expected float32)")))
    }

    /// Any of float32 / int64 / bool.
    pub fn any(&mut self, name: &str) -> Result<Tensor, ArrayError> {
        if let Ok(a) = self.reader.by_name::<ndarray::OwnedRepr<f32>, IxDyn>(name) {
            return Ok(Tensor::F32(a));
        }
        if let Ok(a) = self.reader.by_name::<ndarray::OwnedRepr<i64>, IxDyn>(name) {
            return Ok(Tensor::I64(a));
        }
        let r = self.reader.by_name::<ndarray::OwnedRepr<bool>, IxDyn>(name);
        r.map(Tensor::Bool).map_err(|e| self.err(name, e.to_string()))
    }
}
