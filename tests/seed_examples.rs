//! The seed's examples, verbatim, against the real `waymark serve`, through
//! the AWS CLI and boto3 installed from PyPI (`scripts/test.sh` installs them):
//!
//! - the QuickShip setup through the CLI: a private DNS namespace
//!   `quickship.local` (polling `get-operation`) and a service `user-auth-db`;
//! - the seed's `aws servicediscovery register-instance ... --attributes
//!   tablename=UserAuth,environment=prod` command, character for character,
//!   with the endpoint given by `AWS_ENDPOINT_URL`;
//! - the seed's Python `discover_instances(...)` snippet, verbatim
//!   (`tests/python/seed_discover.py`), which must find `UserAuth`, with the
//!   SDK's `data-` host prefix turned off both ways botocore offers:
//!   `Config(inject_host_prefix=False)` and
//!   `AWS_DISABLE_HOST_PREFIX_INJECTION=true`;
//! - and the gotcha: without either, boto3 and the CLI send DiscoverInstances
//!   to `data-127.0.0.1`, which does not resolve.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, http_get as get};

mod support;

/// The seed's CLI example (Implementation Steps, 4), exactly as written.
const SEED_REGISTER_COMMAND: &str = "aws servicediscovery register-instance \\
  --service-id <service-id-for-user-auth-db> \\
  --instance-id user-auth-prod-01 \\
  --attributes tablename=UserAuth,environment=prod
";

/// Upper bound for one CLI or Python run (they take well under a second).
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

// ----- the AWS tools ---------------------------------------------------------

/// Fails with install instructions when the AWS CLI or boto3 is missing.
fn require_aws_tools() {
    let hint = "the seed examples need the AWS CLI and boto3 from PyPI: \
                `pip install awscli==1.45.11 boto3==1.43.11` (scripts/test.sh installs them)";
    let aws = Command::new("aws").arg("--version").output();
    assert!(
        aws.as_ref().is_ok_and(|o| o.status.success()),
        "`aws --version` failed ({aws:?}); {hint}"
    );
    let boto3 = Command::new("python3")
        .args(["-c", "import boto3"])
        .output();
    assert!(
        boto3.as_ref().is_ok_and(|o| o.status.success()),
        "`python3 -c 'import boto3'` failed ({boto3:?}); {hint}"
    );
}

/// A CLI or Python command with dummy credentials and a region from the
/// environment, isolated from any AWS configuration of the machine.
fn aws_env(mut cmd: Command, home: &Path) -> Command {
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SERVICEDISCOVERY",
        "AWS_DISABLE_HOST_PREFIX_INJECTION",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIAWAYMARKTESTKEY00")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "waymark-test-secret-not-a-real-one",
        )
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("no-aws-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .stdin(Stdio::null());
    cmd
}

/// Runs a command with a deadline; `None` if it had to be killed.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    status.map(|status| Output {
        status,
        stdout,
        stderr,
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `aws servicediscovery <args> --endpoint-url <endpoint>`; returns its JSON.
fn cli(server: &Server, args: &[&str]) -> Value {
    let mut cmd = Command::new("aws");
    cmd.arg("servicediscovery").args(args).args([
        "--endpoint-url",
        &server.endpoint(),
        "--output",
        "json",
    ]);
    let out = run_with_timeout(aws_env(cmd, server.dir.path()), TOOL_TIMEOUT)
        .unwrap_or_else(|| panic!("aws servicediscovery {args:?} timed out"));
    assert!(
        out.status.success(),
        "aws servicediscovery {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "aws servicediscovery {args:?}: output is not JSON ({e}): {}",
            text(&out.stdout)
        )
    })
}

/// Polls `get-operation` until the operation succeeds; returns it.
fn wait_for_operation(server: &Server, operation_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let op = cli(server, &["get-operation", "--operation-id", operation_id]);
        match op["Operation"]["Status"].as_str() {
            Some("SUCCESS") => return op["Operation"].clone(),
            Some("SUBMITTED" | "PENDING") if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => panic!("operation {operation_id} did not succeed: {op}"),
        }
    }
}

/// `tests/python/seed_discover.py <endpoint> <mode>` with extra environment.
fn seed_python(server: &Server, mode: &str, env: &[(&str, &str)]) -> Option<Output> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/seed_discover.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args([&server.endpoint(), mode]);
    let mut cmd = aws_env(cmd, server.dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, TOOL_TIMEOUT)
}

/// The QuickShip setup through the CLI, then the seed's register command
/// verbatim. Returns the service id.
fn quickship_user_auth_db(server: &Server) -> String {
    let created = cli(
        server,
        &[
            "create-private-dns-namespace",
            "--name",
            "quickship.local",
            "--vpc",
            "vpc-1",
        ],
    );
    let op = wait_for_operation(server, created["OperationId"].as_str().unwrap());
    assert_eq!(op["Type"], "CREATE_NAMESPACE");
    let namespace_id = op["Targets"]["NAMESPACE"].as_str().unwrap().to_string();
    let service = cli(
        server,
        &[
            "create-service",
            "--name",
            "user-auth-db",
            "--namespace-id",
            &namespace_id,
        ],
    );
    let service_id = service["Service"]["Id"].as_str().unwrap().to_string();
    assert!(service_id.starts_with("srv-"), "{service}");

    // The seed's command, through a shell, as a person pastes it; only the
    // placeholder is filled in. The endpoint comes from AWS_ENDPOINT_URL so
    // that not a character of the command changes.
    let command = SEED_REGISTER_COMMAND.replace("<service-id-for-user-auth-db>", &service_id);
    let mut sh = Command::new("sh");
    sh.args(["-c", &command]);
    let mut sh = aws_env(sh, server.dir.path());
    sh.env("AWS_ENDPOINT_URL", server.endpoint());
    let out = run_with_timeout(sh, TOOL_TIMEOUT).expect("register-instance timed out");
    assert!(
        out.status.success(),
        "{command}failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let registered: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    let op = wait_for_operation(server, registered["OperationId"].as_str().unwrap());
    assert_eq!(op["Type"], "REGISTER_INSTANCE");
    assert_eq!(op["Targets"]["INSTANCE"], "user-auth-prod-01", "{op}");
    assert_eq!(op["Targets"]["SERVICE"], service_id.as_str(), "{op}");
    service_id
}

#[test]
fn seed_cli_and_python_examples_find_the_userauth_table() {
    require_aws_tools();
    let server = Server::start();
    let service_id = quickship_user_auth_db(&server);

    // What the CLI stored, read back through the CLI.
    let got = cli(
        &server,
        &[
            "get-instance",
            "--service-id",
            &service_id,
            "--instance-id",
            "user-auth-prod-01",
        ],
    );
    assert_eq!(got["Instance"]["Attributes"]["tablename"], "UserAuth");
    assert_eq!(got["Instance"]["Attributes"]["environment"], "prod");

    // The seed's Python snippet, with the host prefix turned off in code ...
    let out = seed_python(&server, "config", &[]).expect("python timed out");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "UserAuth");

    // ... and by the environment, with an unmodified client.
    let out = seed_python(
        &server,
        "env",
        &[("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")],
    )
    .expect("python timed out");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "UserAuth");

    // The same query through the CLI (botocore honours the same variable).
    let mut cmd = Command::new("aws");
    cmd.args([
        "servicediscovery",
        "discover-instances",
        "--namespace-name",
        "quickship.local",
        "--service-name",
        "user-auth-db",
        "--query-parameters",
        "environment=prod",
        "--endpoint-url",
        &server.endpoint(),
        "--output",
        "json",
    ]);
    let mut cmd = aws_env(cmd, server.dir.path());
    cmd.env("AWS_DISABLE_HOST_PREFIX_INJECTION", "true");
    let out = run_with_timeout(cmd, TOOL_TIMEOUT).expect("aws timed out");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    let instances = found["Instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{found}");
    assert_eq!(instances[0]["InstanceId"], "user-auth-prod-01");
    assert_eq!(instances[0]["NamespaceName"], "quickship.local");
    assert_eq!(instances[0]["ServiceName"], "user-auth-db");
    assert_eq!(instances[0]["Attributes"]["tablename"], "UserAuth");
    assert_eq!(found["InstancesRevision"], 1, "{found}");
}

/// The gotcha the README documents: an unmodified client sends
/// DiscoverInstances to `data-<host>`. The failure is a name-resolution
/// error for `data-127.0.0.1`, which is quick on any machine where the
/// resolver answers; if it is not (a resolver that hangs), this part is
/// skipped rather than made slow.
#[test]
fn without_a_switch_the_sdks_call_the_data_prefixed_host() {
    require_aws_tools();
    let server = Server::start();
    let expected_host = format!("data-127.0.0.1:{}", server.api_port);
    let bounded = Duration::from_secs(20);

    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/seed_discover.py"))
        .args([&server.endpoint(), "default"]);
    let Some(out) = run_with_timeout(aws_env(cmd, server.dir.path()), bounded) else {
        eprintln!("SKIPPED: resolving data-127.0.0.1 did not fail within {bounded:?} here");
        return;
    };
    assert_eq!(
        out.status.code(),
        Some(3),
        "boto3 without a switch should fail on the data- host: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&expected_host),
        "{}",
        text(&out.stdout)
    );

    // The AWS CLI (botocore) does the same; one attempt, not the default
    // retries with back-off.
    let mut cmd = Command::new("aws");
    cmd.args([
        "servicediscovery",
        "discover-instances",
        "--namespace-name",
        "quickship.local",
        "--service-name",
        "user-auth-db",
        "--endpoint-url",
        &server.endpoint(),
    ]);
    let mut cmd = aws_env(cmd, server.dir.path());
    cmd.env("AWS_MAX_ATTEMPTS", "1");
    let Some(out) = run_with_timeout(cmd, bounded) else {
        eprintln!("SKIPPED: resolving data-127.0.0.1 did not fail within {bounded:?} here");
        return;
    };
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&expected_host),
        "{}",
        text(&out.stderr)
    );

    // Neither call reached Waymark (the ListNamespaces before it did).
    let (_, metrics) = get(server.metrics_port, "/metrics").unwrap();
    assert!(
        metrics.contains("operation=\"ListNamespaces\""),
        "the script's ListNamespaces reached the server:\n{metrics}"
    );
    assert!(
        !metrics.contains("operation=\"DiscoverInstances\""),
        "no DiscoverInstances reached the server:\n{metrics}"
    );
}
