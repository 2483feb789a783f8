//! Holds no code: the crate exists for its tests (`tests/tidy.rs`), which check the
//! rules of the workspace that the compiler cannot.
#![forbid(unsafe_code)]
