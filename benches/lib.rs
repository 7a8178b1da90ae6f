//! Criterion benches live in benches/; see benches/runtime.rs.
