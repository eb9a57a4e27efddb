//! The exported folder's integrity: port of `runtimes/py_ort/acestep_ort/host/digests.py`. Every file
//! `manifest.json` lists (the graphs asked for, and every asset) is checked against its size and SHA-256
//! before a runtime loads it; the verdict is kept in [`RECORD`] beside the files
//! (`{file: {"stat": [size, mtime_ns, ctime_ns], "sha256": ...}}`), read and written by both languages, so an
//! unchanged folder is not hashed again. Any write to a file changes its ctime: the record cannot hide an edit.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub const RECORD: &str = ".acestep-digests.json";
const MANIFEST: &str = "manifest.json";
const HINT: &str = "re-export the folder with `acestep-export`";

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("{path} is missing ({MANIFEST} {listed_at} lists it); {HINT}")]
    Missing { path: PathBuf, listed_at: String },
    #[error(
        "{path} is {actual} bytes, {MANIFEST} {listed_at} says {expected}: the file is damaged or truncated; {HINT}"
    )]
    Size { path: PathBuf, listed_at: String, actual: u64, expected: u64 },
    #[error(
        "{path}: SHA-256 {actual} does not match {MANIFEST} {listed_at} ({expected}): the file is damaged or the \
         manifest was edited; {HINT}"
    )]
    Digest { path: PathBuf, listed_at: String, actual: String, expected: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// One file the manifest lists: its name inside the folder, size, digest and where it is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub file: String,
    pub bytes: Option<u64>,
    pub sha256: String,
    pub listed_at: String,
}

/// The files of `graphs` (every graph when `None`) and every asset, as the manifest lists them.
pub fn listed_files(manifest: &Value, graphs: Option<&[&str]>) -> Vec<Listed> {
    let mut out = Vec::new();
    if let Some(records) = manifest.get("graphs").and_then(Value::as_object) {
        for (name, record) in records {
            if graphs.is_some_and(|g| !g.contains(&name.as_str())) {
                continue;
            }
            let files = record.get("files").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            for (index, entry) in files.iter().enumerate() {
                if let (Some(file), Some(sha)) = (entry.get("file"), entry.get("sha256").and_then(Value::as_str)) {
                    out.push(Listed {
                        file: file.as_str().map(str::to_string).unwrap_or_else(|| file.to_string()),
                        bytes: entry.get("bytes").and_then(Value::as_u64),
                        sha256: sha.to_string(),
                        listed_at: format!("graphs.{name}.files[{index}]"),
                    });
                }
            }
        }
    }
    if let Some(assets) = manifest.get("assets").and_then(Value::as_object) {
        for (name, entry) in assets {
            if let Some(sha) = entry.get("sha256").and_then(Value::as_str) {
                out.push(Listed {
                    file: entry.get("file").and_then(Value::as_str).unwrap_or(name).to_string(),
                    bytes: entry.get("bytes").and_then(Value::as_u64),
                    sha256: sha.to_string(),
                    listed_at: format!("assets.{name}"),
                });
            }
        }
    }
    out
}

fn stat_key(meta: &fs::Metadata) -> Vec<i64> {
    let nanos = |secs: i64, ns: i64| secs.saturating_mul(1_000_000_000).saturating_add(ns);
    vec![
        i64::try_from(meta.len()).unwrap_or(i64::MAX),
        nanos(meta.mtime(), meta.mtime_nsec()),
        nanos(meta.ctime(), meta.ctime_nsec()),
    ]
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 22];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn read_record(folder: &Path) -> Map<String, Value> {
    fs::read(folder.join(RECORD))
        .ok()
        .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

/// Best effort (a read-only folder is verified again next time): a temporary file renamed into place.
fn write_record(folder: &Path, record: &Map<String, Value>) {
    let tmp = folder.join(format!("{RECORD}.{}.tmp", std::process::id()));
    let written = serde_json::to_vec_pretty(record)
        .map_err(std::io::Error::other)
        .and_then(|bytes| fs::File::create(&tmp)?.write_all(&bytes))
        .and_then(|()| fs::rename(&tmp, folder.join(RECORD)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

/// Check every listed file of `graphs` (every graph when `None`) and every asset in `folder`; the first bad
/// file is the error. Returns how many files had to be hashed (0 when the record vouched for all).
pub fn verify_folder(folder: &Path, manifest: &Value, graphs: Option<&[&str]>) -> Result<usize, DigestError> {
    let mut record = read_record(folder);
    let mut hashed = 0;
    for item in listed_files(manifest, graphs) {
        let path = folder.join(&item.file);
        let meta = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            _ => return Err(DigestError::Missing { path, listed_at: item.listed_at }),
        };
        if let Some(expected) = item.bytes {
            if meta.len() != expected {
                return Err(DigestError::Size { path, listed_at: item.listed_at, actual: meta.len(), expected });
            }
        }
        let key = stat_key(&meta);
        let seen = record.get(&item.file);
        let vouched =
            seen.and_then(|s| s.get("stat")).and_then(Value::as_array).is_some_and(|stat| {
                stat.len() == key.len() && stat.iter().zip(&key).all(|(a, b)| a.as_i64() == Some(*b))
            }) && seen.and_then(|s| s.get("sha256")).and_then(Value::as_str) == Some(item.sha256.as_str());
        if vouched {
            continue;
        }
        let actual = sha256_file(&path).map_err(|source| DigestError::Io { path: path.clone(), source })?;
        hashed += 1;
        if actual != item.sha256 {
            return Err(DigestError::Digest { path, listed_at: item.listed_at, actual, expected: item.sha256 });
        }
        record.insert(item.file.clone(), serde_json::json!({"stat": key, "sha256": actual}));
    }
    if hashed > 0 {
        write_record(folder, &record);
    }
    Ok(hashed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_with(name: &str, bytes: &[u8]) -> (PathBuf, Value) {
        let dir = std::env::temp_dir().join(format!("acestep-digests-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("g.onnx"), bytes).unwrap();
        let sha: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let manifest = serde_json::json!({"graphs": {"g": {"files": [{"file": "g.onnx", "sha256": sha,
            "bytes": bytes.len()}]}}, "assets": {}});
        (dir, manifest)
    }

    #[test]
    fn hashes_once_then_trusts_the_record() {
        let (dir, manifest) = folder_with("once", b"graph bytes");
        assert_eq!(verify_folder(&dir, &manifest, None).unwrap(), 1);
        assert_eq!(verify_folder(&dir, &manifest, Some(&["g"])).unwrap(), 0);
        assert_eq!(verify_folder(&dir, &manifest, Some(&["other"])).unwrap(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lists_only_the_graphs_asked_for() {
        let (dir, manifest) = folder_with("listed", b"graph bytes");
        assert_eq!(listed_files(&manifest, Some(&["g"])).len(), 1);
        assert_eq!(listed_files(&manifest, Some(&["other"])).len(), 0);
        assert_eq!(listed_files(&manifest, None)[0].listed_at, "graphs.g.files[0]");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_record_is_rewritten_only_after_hashing() {
        let (dir, manifest) = folder_with("rewrite", b"graph bytes");
        verify_folder(&dir, &manifest, None).unwrap();
        let before = fs::metadata(dir.join(RECORD)).unwrap();
        assert_eq!(verify_folder(&dir, &manifest, None).unwrap(), 0);
        let after = fs::metadata(dir.join(RECORD)).unwrap();
        assert_eq!((after.ino(), after.mtime_nsec()), (before.ino(), before.mtime_nsec()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_in_place_of_a_file_is_missing() {
        let (dir, manifest) = folder_with("dir", b"graph bytes");
        fs::remove_file(dir.join("g.onnx")).unwrap();
        fs::create_dir(dir.join("g.onnx")).unwrap();
        let err = verify_folder(&dir, &manifest, None).unwrap_err().to_string();
        assert!(err.contains("g.onnx is missing"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_changed_byte_a_wrong_size_and_a_missing_file() {
        let (dir, manifest) = folder_with("bad", b"graph bytes");
        assert_eq!(verify_folder(&dir, &manifest, None).unwrap(), 1);
        fs::write(dir.join("g.onnx"), b"graph bytez").unwrap(); // same size, new ctime: hashed again
        let err = verify_folder(&dir, &manifest, None).unwrap_err().to_string();
        assert!(err.contains("g.onnx: SHA-256") && err.contains("graphs.g.files[0]"), "{err}");
        fs::write(dir.join("g.onnx"), b"graph").unwrap();
        let err = verify_folder(&dir, &manifest, None).unwrap_err().to_string();
        assert!(err.contains("is 5 bytes") && err.contains("says 11"), "{err}");
        fs::remove_file(dir.join("g.onnx")).unwrap();
        let err = verify_folder(&dir, &manifest, None).unwrap_err().to_string();
        assert!(err.contains("g.onnx is missing"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
