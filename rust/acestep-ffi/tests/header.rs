//! The committed header must be what cbindgen generates from the sources now. `ACESTEP_UPDATE_HEADER=1`
//! rewrites it (`make header`).

use std::path::PathBuf;

#[test]
fn committed_header_is_current() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let header = crate_dir.join("../../include/acestep_runtime.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("utf-8 header");
    if std::env::var_os("ACESTEP_UPDATE_HEADER").is_some() {
        std::fs::write(&header, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate it with `make header` (ACESTEP_UPDATE_HEADER=1 cargo test -p acestep-ffi --test header)",
        header.display()
    );
}
