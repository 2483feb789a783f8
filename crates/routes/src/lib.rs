//! The routing table: which endpoints serve each HTTP hostname and each TCP port, derived
//! from the LRPs (their routes) and their instances (where each one runs).
//!
//! This crate is pure: no IO, no clock, no async. A router feeds it what it reads from
//! the server: a full listing ([`Table::rebuild`]) and then the event stream's changes
//! ([`Table::apply`]), and serves from the [`Routing`] it maintains.
//!
//! The rules:
//! - An instance is an endpoint while it is RUNNING and routable (its readiness check
//!   passes), whatever its presence: during an evacuation the EVACUATING copy and its
//!   replacement both serve, and a SUSPECT copy serves until its replacement runs.
//! - An endpoint is the instance's address (the cell's advertised IP) and the host port
//!   the cell mapped to the route's container port. An instance without that mapping,
//!   or whose address is not an IP address, serves nothing.
//! - Several LRPs may route one hostname or TCP port: their endpoints merge.
//! - Hostnames match without regard to case and without the port of a `Host` header;
//!   an exact hostname wins over a wildcard (`*.example.com` matches every subdomain
//!   of `example.com`, the longest matching suffix first).
//! - Changes are ordered by the event log's sequence numbers, and rows read from a
//!   listing by their generation, so a stale or repeated event never overwrites a newer
//!   row (see [`Table::apply`]).

#![forbid(unsafe_code)]

mod host;
mod table;

pub use host::{HostMap, normalize_host};
pub use table::{Backends, Change, Endpoint, InstanceRef, Routing, Table};
