//! The `sluice` command line and the pieces it is made of.
//!
//! - [`cli`]: argument parsing and exit codes (the only module using anyhow).
//! - [`dryrun`]: run one script against a local connection.
//! - [`init`]: `sluice init` and `sluice generate`.
//! - [`compile`]: a nango-integrations folder into loaded scripts.
//! - [`toolchain`]: the TypeScript SDK, esbuild and componentize-js.
//! - [`project`]: connections, environments and script builds on disk.
//! - [`test`]: replay recorded mocks against each script.
//! - [`mock`]: a mock upstream API on 127.0.0.1 (fixtures and tests).

pub mod cli;
pub mod compile;
pub mod dryrun;
pub mod init;
pub mod mock;
pub mod project;
pub mod test;
pub mod toolchain;
