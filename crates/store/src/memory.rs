//! In-memory fake (in progress).
