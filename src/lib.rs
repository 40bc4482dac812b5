//! Conflux: a distributed configuration center. One node = an HTTP API over a Raft (openraft)
//! replicated state machine on RocksDB. See ARCHITECTURE.md for the map.
//!
//! Without the default `server` feature only [`wire`], [`client`] and [`backup`] (the backup file format) are built: the typed client
//! the operator uses, with no RocksDB or Raft in its dependency tree.

pub mod backup;
pub mod client;
pub mod wire;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod command;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod listener;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod model;
#[cfg(feature = "server")]
pub mod network;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod overload;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod types;
#[cfg(feature = "server")]
pub mod watch;
