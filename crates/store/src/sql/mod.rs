//! SQL implementation (in progress).
