//! The cell agent: announces a cell to the server, accepts the work pushed to it, runs
//! it in containers through a [`runtime::ContainerRuntime`], watches it (health checks,
//! exits) and reports what happened. It restarts nothing on its own: a crash is
//! reported and the server decides.
//!
//! It knows the cell protocol (`api::cell`) and the runtime's interface; it knows
//! nothing of placement, the store or other cells.

mod actions;
mod agent;
mod checks;
mod exec;
#[cfg(test)]
mod fake;
mod http;
mod images;
mod logs;
mod metrics;
mod record;
mod reporter;
mod stacks;
mod usage;
mod work;

pub use agent::{Agent, CellConfig, Drained};
pub use images::ImageSource;
pub use logs::LogLimits;
pub use stacks::{Stacks, detect_capacity};
pub use usage::DEFAULT_USAGE_INTERVAL;
