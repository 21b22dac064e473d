//! Waymark: a Kubernetes-native service registry with the semantics and the
//! wire API of AWS Cloud Map.
//!
//! - [`api`]: the Cloud Map JSON 1.1 API over HTTP.
//! - [`auth`]: AWS Signature Version 4 verification of API requests.
//! - [`dns`]: authoritative DNS for DNS namespaces, answered from the registry.
//! - [`health`]: active HTTP, HTTPS and TCP health checks of registered instances.
//! - [`registry`]: the domain model and rules, the in-memory index and the
//!   durable store (no Kubernetes, HTTP or DNS in it).
//! - [`crd`]: the `waymark.dev/v1alpha1` custom resources.
//! - [`telemetry`]: logging, Prometheus metrics and the health endpoints.
//! - [`controller`]: watches the cluster and keeps the registry equal to it.
//! - [`xds`]: the xDS server (ADS) for Envoy and proxyless gRPC clients.
//! - [`cli`]: the `waymark` command line.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod dns;
pub mod health;
pub mod registry;
pub mod telemetry;
pub mod xds;
