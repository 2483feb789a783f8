//! The API end to end over the in-memory store: every route, the error contract, and
//! the event stream.

mod harness;

mod cells;
mod domains;
mod events;
mod input;
mod lrps;
mod tasks;
