//! Corral's auction: given a live [`Snapshot`] of the cells and a batch of [`Work`],
//! decide which cell runs what.
//!
//! The semantics are Diego's (`auctioneer`'s `auctionrunner`): strict filters on rootfs,
//! volume drivers and placement tags, and no new work on evacuating (draining) cells;
//! then, lowest score wins, where the score is the
//! mean used fraction of memory, disk and containers after the placement, plus 0.25 per
//! container still starting on the cell, plus 1000 per instance of the same LRP (or per
//! task, for tasks) already on it. LRPs spread across zones before anything else.
//!
//! This crate is pure: no IO, no clock, no randomness, no async. The scheduler keeps one
//! [`Snapshot`] up to date from cell reports and its own placements, and calls [`place`]
//! once per batch. A batch at 10,000 cells costs memory lookups: cells with identical
//! attributes and capacity share a class, and each class keeps its cells ordered by
//! score (see `snapshot`), so a placement looks at a few cells per class, not at every
//! cell.

#![forbid(unsafe_code)]

mod cell;
mod filter;
mod place;
mod score;
mod snapshot;
mod work;

#[cfg(test)]
mod tests;

pub use cell::{Capacity, CellView, Usage};
pub use place::place;
pub use snapshot::Snapshot;
pub use work::{Placement, Plan, Unplaced, Work, WorkId};
