//! An unmodified AWS SDK client for a `waymark serve` started by the shared
//! test support.
#![allow(dead_code)] // each test binary uses a different part of it

use std::net::{IpAddr, Ipv4Addr};

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::config::retry::RetryConfig;
use aws_sdk_servicediscovery::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns};

#[path = "../support/mod.rs"]
pub mod support;
pub use support::Server;

/// Resolves every name to 127.0.0.1. The SDK sends `DiscoverInstances` to
/// `data-<endpoint host>` (a host prefix the Rust SDK cannot turn off), so,
/// like the Helm chart's `data-<release>` Service alias, both `waymark.test`
/// and `data-waymark.test` must reach the server.
#[derive(Debug, Clone)]
struct Loopback;

impl ResolveDns for Loopback {
    fn resolve_dns<'a>(&'a self, _name: &'a str) -> DnsFuture<'a> {
        DnsFuture::ready(Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]))
    }
}

/// Builds SDK clients for a test server.
pub trait SdkClient {
    /// An unmodified AWS SDK client pointed at this server.
    fn client(&self) -> Client {
        self.client_as("AKIDEXAMPLE", "secret")
    }
    /// The same, signing with the given access key.
    fn client_as(&self, access_key_id: &str, secret: &str) -> Client {
        self.client_with(access_key_id, secret, RetryConfig::standard())
    }
    /// The same, retrying as `retry` says.
    fn client_with(&self, access_key_id: &str, secret: &str, retry: RetryConfig) -> Client;
}

impl SdkClient for Server {
    fn client_with(&self, access_key_id: &str, secret: &str, retry: RetryConfig) -> Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_with_resolver(Loopback);
        sdk(
            http,
            format!("http://waymark.test:{}", self.api_port),
            access_key_id,
            secret,
            retry,
        )
    }
}

/// An unmodified AWS SDK client for a server serving TLS
/// (`https://waymark.test:<api port>`), trusting only the CA certificates in
/// `ca_pem`.
pub fn https_client(server: &Server, ca_pem: &str) -> Client {
    let trust = tls::TrustStore::empty().with_pem_certificate(ca_pem.as_bytes());
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(
            tls::TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .unwrap(),
        )
        .build_with_resolver(Loopback);
    sdk(
        http,
        format!("https://waymark.test:{}", server.api_port),
        "AKIDEXAMPLE",
        "secret",
        RetryConfig::standard(),
    )
}

fn sdk(
    http: aws_smithy_runtime_api::client::http::SharedHttpClient,
    endpoint: String,
    access_key_id: &str,
    secret: &str,
    retry: RetryConfig,
) -> Client {
    let config = aws_sdk_servicediscovery::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key_id, secret, None, None, "test"))
        .endpoint_url(endpoint)
        .http_client(http)
        .retry_config(retry)
        .build();
    Client::from_conf(config)
}

/// Creates service `name` (no DNS, no health check) in `namespace_id`;
/// returns its id.
pub async fn create_service(client: &Client, namespace_id: &str, name: &str) -> String {
    client
        .create_service()
        .name(name)
        .namespace_id(namespace_id)
        .send()
        .await
        .unwrap()
        .service()
        .unwrap()
        .id()
        .unwrap()
        .to_string()
}

/// Registers instance `id` with `attrs` in `svc` and waits for its
/// operation to succeed.
pub async fn register(client: &Client, svc: &str, id: &str, attrs: &[(&str, String)]) {
    let mut req = client.register_instance().service_id(svc).instance_id(id);
    for (k, v) in attrs {
        req = req.attributes(*k, v);
    }
    let op = req.send().await.unwrap();
    wait_op(client, op.operation_id().unwrap()).await;
}

/// Fetches an operation and checks it completed with SUCCESS.
pub async fn wait_op(client: &Client, op: &str) -> aws_sdk_servicediscovery::types::Operation {
    let out = client
        .get_operation()
        .operation_id(op)
        .send()
        .await
        .unwrap();
    let op = out.operation().unwrap().clone();
    assert_eq!(
        op.status(),
        Some(&aws_sdk_servicediscovery::types::OperationStatus::Success),
        "{op:?}"
    );
    op
}

/// Creates an HTTP namespace and returns its id once the operation succeeded.
pub async fn http_namespace(client: &Client, name: &str) -> String {
    let op = client
        .create_http_namespace()
        .name(name)
        .send()
        .await
        .unwrap();
    let op = wait_op(client, op.operation_id().unwrap()).await;
    op.targets().unwrap()[&aws_sdk_servicediscovery::types::OperationTargetType::Namespace].clone()
}

/// Creates a private DNS namespace and returns its id once the operation succeeded.
pub async fn private_namespace(client: &Client, name: &str) -> String {
    let op = client
        .create_private_dns_namespace()
        .name(name)
        .vpc("vpc-0123")
        .send()
        .await
        .unwrap();
    let op = wait_op(client, op.operation_id().unwrap()).await;
    op.targets().unwrap()[&aws_sdk_servicediscovery::types::OperationTargetType::Namespace].clone()
}
