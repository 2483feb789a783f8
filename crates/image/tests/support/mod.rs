//! Shared pieces of the integration tests: a local registry and an image pusher.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod push;
pub mod registry;
