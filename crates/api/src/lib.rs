//! The wire types of Corral's HTTP API (`/v1`) and their conversion into model types.
//!
//! Requests are parsed strictly (unknown fields are refused) and then validated into
//! model types exactly once, here; errors name the field. Responses are model types
//! serialized as they are, wrapped in a list or error envelope.
//!
//! This crate knows the shape of the API, not how it is served or called: no HTTP, no
//! IO.

#![forbid(unsafe_code)]

mod cell;
mod error;
mod event;
mod lrp;
mod task;

pub use cell::{
    AssignmentsRequest, Heartbeat, HeartbeatReply, Report, ReportResult, Reports, ReportsReply,
    WorkBatch, WorkItem,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::EventMessage;
pub use lrp::{LrpCreate, LrpPatch, LrpStatus, ResourcesInput};
pub use task::{DomainUpsert, TaskCreate};

use serde::{Deserialize, Serialize};

/// The domain work lands in when the request names none.
pub const DEFAULT_DOMAIN: &str = "default";
/// The rootfs work gets when the request names none: the cell's own root, read-only.
pub const DEFAULT_ROOTFS: &str = "preloaded:host";
/// Largest request body the server accepts. Bigger than any valid LRP (routes 128 KB,
/// annotation 10 KB, a bounded action tree) so the field limits, not this, report.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A list response. `items` is complete; the envelope leaves room for paging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
}
