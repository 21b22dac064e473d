//! API access control end to end: `waymark serve --auth-credentials` with
//! the official AWS SDK for Rust, boto3 and the AWS CLI signing with the
//! configured keys, policies scoping what each principal may do, and the
//! requests SigV4 must refuse (wrong secret, unknown key, unsigned, old
//! timestamp, changed body, presigned URL past its expiry).

#[path = "api/auth_fixture.rs"]
mod fixture;
#[path = "api/harness.rs"]
mod harness;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_servicediscovery::error::ProvideErrorMetadata;
use fixture::{
    ADMIN, CREDENTIALS, INVENTORY, READER, Signing, code, error_type, post, secured, setup, sign,
};
use harness::{SdkClient, Server, register};

#[tokio::test]
async fn the_rust_sdk_signs_with_configured_keys_and_policies_scope_each_principal() {
    let server = secured();
    let (ns_id, inventory, orders) = setup(&server, "scoped.test").await;
    let admin = server.client_as(ADMIN.0, ADMIN.1);
    let manager = server.client_as(INVENTORY.0, INVENTORY.1);

    // Allowed: its own service.
    register(
        &manager,
        &inventory,
        "i-1",
        &[("AWS_INSTANCE_IPV4", "10.0.0.1".into())],
    )
    .await;
    let found = manager
        .discover_instances()
        .namespace_name("scoped.test")
        .service_name("inventory-manager")
        .send()
        .await
        .unwrap();
    assert_eq!(found.instances().len(), 1);

    // Refused: another service, and anything beyond its policy. Nothing
    // changes.
    let err = manager
        .register_instance()
        .service_id(&orders)
        .instance_id("i-2")
        .attributes("AWS_INSTANCE_IPV4", "10.0.0.2")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&err), "AccessDeniedException");
    let message = err.message().unwrap();
    assert!(
        message.contains("User: arn:aws:iam::000000000000:user/inventory-manager")
            && message.contains("servicediscovery:RegisterInstance")
            && message.contains(&format!("service/{orders}")),
        "{message}"
    );
    let listed = admin
        .list_instances()
        .service_id(&orders)
        .send()
        .await
        .unwrap();
    assert!(listed.instances().is_empty());
    let err = manager
        .delete_service()
        .id(&inventory)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&err), "AccessDeniedException");

    // Explicit Deny beats the admin's `servicediscovery:*`.
    let err = admin
        .delete_namespace()
        .id(&ns_id)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&err), "AccessDeniedException");
    assert!(
        err.message().unwrap().contains("explicit deny"),
        "{:?}",
        err.message()
    );

    // A wrong secret and an unknown key are refused before any policy.
    let wrong = server.client_as(INVENTORY.0, "not-the-secret-0123456789");
    let err = wrong
        .list_namespaces()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&err), "InvalidSignatureException");
    let stranger = server.client_as("AKIAWAYMARKSTRANGER1", "whatever-secret-0123456789");
    let err = stranger
        .list_namespaces()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&err), "UnrecognizedClientException");

    let denied = server.metric("waymark_api_requests_total{operation=\"RegisterInstance\",result=\"AccessDeniedException\"}");
    assert_eq!(denied, Some(1.0));
}

// ----- raw requests, signed by the AWS SDK's own signer -----------------------

/// What to sign.
#[test]
fn unsigned_stale_altered_and_expired_presigned_requests_are_refused() {
    let server = secured();
    let now = SystemTime::now();
    let good = |time, presign_for| Signing {
        operation: "ListNamespaces",
        key: INVENTORY,
        time,
        body: "{}",
        presign_for,
    };

    // Signed now: accepted.
    let (path, headers) = sign(&server, &good(now, None));
    let (status, body) = post(&server, &path, &headers, "{}");
    assert_eq!(status, 200, "{body}");

    // Unsigned: no token at all.
    let unsigned: Vec<_> = headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("authorization"))
        .cloned()
        .collect();
    let (status, body) = post(&server, "/", &unsigned, "{}");
    assert_eq!(
        (status, error_type(&body).as_str()),
        (403, "MissingAuthenticationTokenException")
    );

    // The body changed after signing.
    let (status, body) = post(&server, &path, &headers, r#"{"MaxResults":1}"#);
    assert_eq!(
        (status, error_type(&body).as_str()),
        (403, "InvalidSignatureException")
    );

    // Signed ten minutes ago: outside the five-minute skew.
    let old = now - Duration::from_secs(600);
    let (path, headers) = sign(&server, &good(old, None));
    let (status, body) = post(&server, &path, &headers, "{}");
    assert_eq!(
        (status, error_type(&body).as_str()),
        (403, "InvalidSignatureException"),
        "{body}"
    );
    assert!(body.contains("Signature expired"), "{body}");

    // Presigned: good while it lasts, refused when replayed after expiry.
    let (path, headers) = sign(&server, &good(now, Some(Duration::from_secs(1))));
    assert!(path.contains("X-Amz-Signature="), "{path}");
    assert!(headers.iter().all(|(n, _)| n != "authorization"));
    let (status, body) = post(&server, &path, &headers, "{}");
    assert_eq!(status, 200, "presigned within its lifetime: {body}");
    std::thread::sleep(Duration::from_millis(2100));
    let (status, body) = post(&server, &path, &headers, "{}");
    assert_eq!(
        (status, error_type(&body).as_str()),
        (403, "InvalidSignatureException"),
        "{body}"
    );
}

// ----- boto3 and the AWS CLI ---------------------------------------------------

/// `cmd` with `key` as its credentials and nothing from the machine's AWS
/// configuration.
fn with_key(mut cmd: Command, home: &Path, key: (&str, &str)) -> Command {
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SERVICEDISCOVERY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("no-aws-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_PAGER", "")
        .stdin(Stdio::null());
    cmd
}

fn output(mut cmd: Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (scripts/test.sh installs the AWS CLI and boto3)")
    })
}

/// boto3 registers `instance` in `service`; prints `OK` or the error code.
const BOTO3: &str = r#"
import sys, boto3, botocore
endpoint, service, instance = sys.argv[1:4]
sd = boto3.client("servicediscovery", endpoint_url=endpoint)
try:
    sd.register_instance(ServiceId=service, InstanceId=instance,
                         Attributes={"AWS_INSTANCE_IPV4": "10.1.0.1"})
    print("OK")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#;

fn boto3(server: &Server, key: (&str, &str), service: &str, instance: &str) -> String {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", BOTO3, &server.endpoint(), service, instance]);
    let out = output(with_key(cmd, server.dir.path(), key));
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn aws_cli(server: &Server, key: (&str, &str), args: &[&str]) -> Output {
    let mut cmd = Command::new("aws");
    cmd.arg("servicediscovery").args(args).args([
        "--endpoint-url",
        &server.endpoint(),
        "--output",
        "json",
    ]);
    output(with_key(cmd, server.dir.path(), key))
}

#[tokio::test]
async fn boto3_and_the_aws_cli_sign_with_configured_keys() {
    let server = secured();
    let (ns_id, inventory, orders) = setup(&server, "tools.test").await;

    assert_eq!(boto3(&server, INVENTORY, &inventory, "py-1"), "OK");
    assert_eq!(
        boto3(&server, INVENTORY, &orders, "py-2"),
        "AccessDeniedException"
    );
    let wrong = (INVENTORY.0, "not-the-secret-0123456789");
    assert_eq!(
        boto3(&server, wrong, &inventory, "py-3"),
        "InvalidSignatureException"
    );

    let out = aws_cli(
        &server,
        INVENTORY,
        &[
            "discover-instances",
            "--namespace-name",
            "tools.test",
            "--service-name",
            "inventory-manager",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["Instances"][0]["InstanceId"], "py-1");

    let out = aws_cli(&server, INVENTORY, &["delete-namespace", "--id", &ns_id]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AccessDeniedException")
            && stderr.contains("servicediscovery:DeleteNamespace"),
        "{stderr}"
    );
}

/// `waymark inspect` against `server` with `key` in the environment (or none).
fn inspect(server: &Server, key: Option<(&str, &str)>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waymark"));
    cmd.arg("inspect")
        .args(["--endpoint-url", &server.endpoint()])
        .args(args);
    match key {
        Some(key) => output(with_key(cmd, server.dir.path(), key)),
        None => {
            cmd.env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY");
            output(cmd)
        }
    }
}

#[tokio::test]
async fn waymark_inspect_signs_with_the_environments_credentials() {
    let server = secured();
    let (_, inventory, _) = setup(&server, "inspect.test").await;
    register(
        &server.client_as(INVENTORY.0, INVENTORY.1),
        &inventory,
        "inv-1",
        &[("AWS_INSTANCE_IPV4", "10.4.0.1".into())],
    )
    .await;
    let out = inspect(
        &server,
        Some(INVENTORY),
        &["services", "inspect.test", "-o", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(services.as_array().unwrap().len(), 2, "{services}");
    // ExplainInstance is authorized as GetInstance (which Get* allows).
    let out = inspect(
        &server,
        Some(INVENTORY),
        &["explain", "inspect.test", "inventory-manager", "inv-1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("the Cloud Map API"));
    // The reader may only DiscoverInstances: listing namespaces is refused,
    // and the refusal is AWS's.
    let out = inspect(&server, Some(READER), &["namespaces"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("AccessDeniedException")
            && stderr.contains("servicediscovery:ListNamespaces"),
        "{stderr}"
    );
    // Unsigned, or signed with a wrong secret.
    let out = inspect(&server, None, &["namespaces"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("MissingAuthenticationTokenException"),
        "{stderr}"
    );
    let out = inspect(
        &server,
        Some((ADMIN.0, "not-the-secret-0123456789")),
        &["namespaces"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("InvalidSignatureException"),
        "{stderr}"
    );
    // Nothing listening: a transport error naming the endpoint.
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args([
            "inspect",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "namespaces",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("cannot reach the Waymark API at http://127.0.0.1:9"),
        "{stderr}"
    );
}

#[tokio::test]
async fn changed_credentials_and_policies_apply_without_a_restart() {
    let server = secured();
    let (_, inventory, orders) = setup(&server, "reload.test").await;
    let manager = server.client_as(INVENTORY.0, INVENTORY.1);
    let register = |svc: String, id: &'static str| {
        let manager = manager.clone();
        async move {
            manager
                .register_instance()
                .service_id(svc)
                .instance_id(id)
                .attributes("AWS_INSTANCE_IPV4", "10.2.0.1")
                .send()
                .await
                .map(|_| ())
                .map_err(|e| code(&e.into_service_error()))
        }
    };
    assert_eq!(
        register(orders.clone(), "r-1").await,
        Err("AccessDeniedException".into())
    );

    // Widen the manager's policy to order-processor too.
    let creds = server.dir.path().join("credentials.yaml");
    let widened = CREDENTIALS.replace(
        "\"servicediscovery:ServiceName\": inventory-manager",
        "\"servicediscovery:ServiceName\": [inventory-manager, order-processor]",
    );
    std::fs::write(&creds, &widened).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while register(orders.clone(), "r-1").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the widened policy never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken file is refused; the version in force keeps serving.
    std::fs::write(&creds, "principals: [").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(register(inventory.clone(), "r-2").await, Ok(()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("waymark_auth_reloads_total{result=\"refused\"}") != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the refused reload was not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The manager's key removed: its calls are no longer recognised.
    let start = CREDENTIALS.find("  - name: inventory-manager").unwrap();
    let end = CREDENTIALS.find("policies:\n  everything").unwrap();
    let without = format!("{}{}", &CREDENTIALS[..start], &CREDENTIALS[end..]);
    std::fs::write(&creds, without).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match register(inventory.clone(), "r-3").await {
            Err(code) if code == "UnrecognizedClientException" => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the removed key still works: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `waymark serve` with `args`; returns its exit status and stderr.
fn serve_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("serve")
        .args(["--metrics-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unsafe_or_broken_access_settings_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    let err = serve_fails(&["--data-dir", data, "--api-addr", "0.0.0.0:0"]);
    assert!(
        err.contains("refusing to serve the Cloud Map API without authentication on 0.0.0.0"),
        "{err}"
    );
    let err = serve_fails(&[
        "--data-dir",
        data,
        "--auth",
        "sigv4",
        "--api-addr",
        "127.0.0.1:0",
    ]);
    assert!(
        err.contains("--auth sigv4 needs --auth-credentials"),
        "{err}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "principals:\n  - name: x\n    accessKeys: [{accessKeyId: SHORT, secretAccessKey: s}]\n",
    )
    .unwrap();
    let err = serve_fails(&[
        "--data-dir",
        data,
        "--api-addr",
        "127.0.0.1:0",
        "--auth-credentials",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("SHORT"), "{err}");
}
