//! The `sluice` command line and the pieces it is made of.
//!
//! - [`cli`]: argument parsing and exit codes (the only module using anyhow).
//! - [`dryrun`]: run one script against a local connection.
//! - [`compile`]: a nango-integrations folder into loaded scripts.
//! - [`toolchain`]: the TypeScript SDK, esbuild and componentize-js.
//! - [`project`]: connections, environments and script builds on disk.
//! - [`mock`]: a mock upstream API on 127.0.0.1 (fixtures and tests).

pub mod cli;
pub mod compile;
pub mod dryrun;
pub mod mock;
pub mod project;
pub mod toolchain;
