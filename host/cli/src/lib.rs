//! The `sluice` command line: argument parsing and exit codes over the
//! project library, the server and the runtime (the only crate using
//! anyhow).

pub mod cli;
mod demo;
