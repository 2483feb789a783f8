//! Corral's domain model: the desired and actual state of LRPs, tasks, cells and domains,
//! their state machines and their validation.
//!
//! This crate is pure: no IO, no clock, no randomness, no async. Times and ids are inputs.
//! Everything here is plain data that the store persists, the API exposes and the
//! scheduler and converger compute on.

mod action;
mod cell;
mod check;
mod crash;
mod credentials;
mod domain;
mod instance;
mod lrp;
mod name;
mod resources;
mod route;
mod task;
mod time;
mod validate;

pub use action::{
    Action, Checksum, ChecksumAlgorithm, DownloadAction, ImageCommand, ResourceLimits, RunAction,
    RunImageAction,
};
pub use cell::{Cell, CellCapacity};
pub use check::{Check, CheckKind, Checks};
pub use crash::{CrashPolicy, Restart};
pub use credentials::RegistryCredentials;
pub use domain::Domain;
pub use instance::{
    Instance, InstanceKey, InstanceState, InvalidTransition, PortMapping, Presence,
};
pub use lrp::{Lrp, LrpSpec, LrpUpdate, env_map};
pub use name::Name;
pub use resources::Resources;
pub use route::{HttpRoute, Routes, TcpRoute};
pub use task::{Task, TaskSpec, TaskState, TaskTransition};
pub use time::{Timestamp, Utc};
pub use validate::{Rootfs, ValidationError, limits};

/// The generation of a stored row. Every write is a compare-and-set on it: a writer
/// names the generation it read, and the write fails if the row has moved on since.
pub type Generation = u64;

/// Environment variables of a process, in the order given.
pub type Env = Vec<(String, String)>;
