//! sluice's sandbox core: runs Nango-style integration scripts as WebAssembly
//! components with hard CPU, memory, time and egress limits.
//!
//! - [`Runtime`] owns the wasmtime engine, the linker and the on-disk cache of
//!   precompiled components; [`Runtime::load_file`] gives a [`Script`],
//!   [`Runtime::execute`] runs it once in a fresh store.
//! - [`exec::Services`] is what executions may reach: providers, connections,
//!   records ([`records::RecordStore`]), other scripts and the HTTP client.
//! - The host side of each `nango:scripts` import is in `host/`, the
//!   request semantics in [`proxy`] and [`paginate`].
//!
//! This crate knows no HTTP server, database or command line.

pub mod batch;
mod bindings;
pub mod connection;
mod engine;
pub mod exec;
mod host;
pub mod js;
pub mod limits;
pub mod locks;
pub mod paginate;
pub mod providers;
pub mod proxy;
pub mod records;
pub mod replay;
pub mod template;
pub mod upstream;
pub mod validate;

pub use engine::{CONTRACT_VERSION, LoadError, Runtime, Script, ScriptKind};
pub use exec::{
    Call, Environment, ExecError, Execution, Report, Services, TrackedDeletes, track_deletes_key,
};
pub use limits::{DEFAULT_CACHE_MAX_BYTES, Limits, RuntimeConfig, Timeouts};
pub use upstream::Upstream;
