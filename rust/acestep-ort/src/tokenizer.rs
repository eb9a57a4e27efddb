//! The text tokenizer lives in `acestep-core` (shared with the C-ABI library `acestep-ffi`); re-exported here.

pub use acestep_core::tokenizer::*;
