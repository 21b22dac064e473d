//! The xDS server (`--xds-addr`): the registry as Envoy's discovery API, so
//! Envoy (CDS/EDS) and proxyless gRPC clients (`xds:///<service>.<namespace>`,
//! LDS/RDS/CDS/EDS) route on it.
//!
//! - `snapshot`: registry state → xDS resources (pure), rebuilt per changed
//!   service.
//! - `ads`: one ADS stream's versions, nonces, ACKs and NACKs (pure).
//! - `delta`: the same for incremental (delta) ADS streams (pure).
//! - `server`: the gRPC service (tonic), and the task that follows the
//!   registry and publishes snapshots to every stream.
//! - `status`: the last NACK per service, for the ServiceDiscovery status.
//!
//! Served: the Aggregated Discovery Service, state of the world and delta.
//! See docs/xds.md.

pub mod ads;
pub mod delta;
mod metrics;
mod server;
pub mod snapshot;
mod status;

use std::net::SocketAddr;

pub use self::metrics::XdsMetrics;
pub use self::server::{bind, serve};
pub use self::status::{NackRecord, XdsStatus};

/// Errors of the xDS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not bind.
    #[error("cannot listen on {addr} for xDS: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("xDS server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// A metric could not be registered.
    #[error("xDS metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The task that follows the registry failed.
    #[error("xDS snapshot task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
