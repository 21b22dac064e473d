//! Waymark: a Kubernetes-native service registry with the semantics and the
//! wire API of AWS Cloud Map.
//!
//! - [`api`]: the Cloud Map JSON 1.1 API over HTTP.
//! - [`registry`]: the domain model and rules, the in-memory index and the
//!   durable store (no Kubernetes, HTTP or DNS in it).
//! - [`crd`]: the `waymark.dev/v1alpha1` custom resources.
//! - [`telemetry`]: logging, Prometheus metrics and the health endpoints.
//! - [`cli`]: the `waymark` command line.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod crd;
pub mod registry;
pub mod telemetry;
