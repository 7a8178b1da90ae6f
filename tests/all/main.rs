//! sluice's integration tests: real guest components, a real mock upstream
//! on 127.0.0.1, and the runtime in between.

mod app_proxy;
mod bill;
mod bodies;
mod cli;
mod config_legacy;
mod connect_sessions;
mod connect_ui;
mod demo;
mod durability;
mod events;
mod examples;
mod failover;
mod features;
mod github_app;
mod host_limits;
mod incoming;
mod jwt;
mod limits;
mod logs;
mod mcp;
mod mcp_tools;
mod metrics;
mod oauth;
mod oauth1;
mod paginate;
mod project;
mod proxy;
mod records;
mod scheduler;
mod server;
mod two_step;
mod typescript;
mod webhooks;
mod zero;
