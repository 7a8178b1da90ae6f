//! The project library: everything between a nango-integrations folder and
//! the runtime, shared by the CLI, the server and the tests.
//!
//! - [`compile`]: a nango-integrations folder into loaded scripts, and what
//!   nango.yaml says of each (models, `track_deletes`, validation).
//! - [`toolchain`]: the TypeScript SDK, esbuild and componentize-js.
//! - [`project`]: connections, environments and script builds on disk.
//! - [`dryrun`]: run one script against a local connection.
//! - [`test`]: replay recorded mocks against each script.
//! - [`init`]: `sluice init` and `sluice generate`.
//! - [`migrate`]: `sluice migrate-to-zero-yaml`.
//! - [`remote`]: a connection and variables read from a running server.
//! - [`mock`]: a mock upstream API on 127.0.0.1 (fixtures and tests).
//! - [`debug`]: `--debug`'s lines.

pub mod catalog;
pub mod compile;
pub mod debug;
pub mod deploy;
pub mod dryrun;
pub mod init;
pub mod migrate;
pub mod mock;
pub mod project;
pub mod providers;
pub mod remote;
pub mod test;
pub mod toolchain;
pub mod watch;
pub mod zero;
pub mod zerotest;
