//! The API's guards end to end: the audit log (a CloudTrail-shaped line per
//! call, found by the request id the SDK reports; a sink that blocks never
//! stalls the API), per-principal rate limits (ThrottlingException, retried
//! by the SDK) and malformed Authorization headers refused one by one
//! without changing anything.

#[path = "api/auth_fixture.rs"]
mod fixture;
#[path = "api/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_servicediscovery::config::retry::RetryConfig;
use aws_sdk_servicediscovery::error::ProvideErrorMetadata;
use aws_sdk_servicediscovery::operation::RequestId;
use fixture::{
    ADMIN, INVENTORY, READER, Signing, code, error_type, post, secured_with, setup, sign,
};
use harness::support::Options;
use harness::{SdkClient, Server, create_service, http_namespace};
use serde_json::Value;

/// The audit lines written so far.
fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until the audit log holds a line for each of `ids` (the writer is
/// asynchronous) and returns them in that order.
fn lines_for(path: &Path, ids: &[String]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines = audit_lines(path);
        let found: Vec<Option<&Value>> = ids
            .iter()
            .map(|id| lines.iter().find(|l| l["requestID"] == id.as_str()))
            .collect();
        if found.iter().all(Option::is_some) {
            return found.into_iter().map(|l| l.unwrap().clone()).collect();
        }
        assert!(
            Instant::now() < deadline,
            "no audit line for some of {ids:?} in {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn request_id<T: RequestId>(x: &T) -> String {
    x.request_id().expect("x-amzn-RequestId").to_string()
}

#[tokio::test]
async fn every_call_leaves_an_audit_line_with_its_principal_and_result() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = secured_with(&["--audit-log", log.to_str().unwrap(), "--audit-reads"]);
    let (ns, inventory_svc, orders_svc) = setup(&server, "audit.example").await;
    let inventory = server.client_as(INVENTORY.0, INVENTORY.1);
    let admin = server.client_as(ADMIN.0, ADMIN.1);
    let reader = server.client_as(READER.0, READER.1);
    let mut ids = Vec::new();
    let mut expected: Vec<(&str, &str, Option<&str>)> = Vec::new();

    // The seed's least-privilege key: its own service, nothing else.
    let ok = inventory
        .register_instance()
        .service_id(&inventory_svc)
        .instance_id("i-1")
        .attributes("AWS_INSTANCE_IPV4", "10.0.0.1")
        .send()
        .await
        .unwrap();
    ids.push(request_id(&ok));
    expected.push(("RegisterInstance", "inventory-manager", None));
    let e = inventory
        .register_instance()
        .service_id(&orders_svc)
        .instance_id("i-2")
        .attributes("AWS_INSTANCE_IPV4", "10.0.0.2")
        .send()
        .await
        .unwrap_err();
    ids.push(request_id(&e));
    expected.push((
        "RegisterInstance",
        "inventory-manager",
        Some("AccessDeniedException"),
    ));
    let e = inventory
        .delete_namespace()
        .id(&ns)
        .send()
        .await
        .unwrap_err();
    ids.push(request_id(&e));
    expected.push((
        "DeleteNamespace",
        "inventory-manager",
        Some("AccessDeniedException"),
    ));
    // Explicit Deny beats the admin's servicediscovery:*.
    let e = admin.delete_namespace().id(&ns).send().await.unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    ids.push(request_id(&e));
    expected.push(("DeleteNamespace", "admin", Some("AccessDeniedException")));
    // The read-only key discovers, and may do nothing else.
    let found = reader
        .discover_instances()
        .namespace_name("audit.example")
        .service_name("inventory-manager")
        .send()
        .await
        .unwrap();
    assert_eq!(found.instances().len(), 1);
    ids.push(request_id(&found));
    expected.push(("DiscoverInstances", "reader", None));
    let e = reader.list_services().send().await.unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    ids.push(request_id(&e));
    expected.push(("ListServices", "reader", Some("AccessDeniedException")));
    // A wrong secret proves nobody.
    let forger = server.client_with(INVENTORY.0, "not-the-secret", RetryConfig::disabled());
    let e = forger
        .deregister_instance()
        .service_id(&inventory_svc)
        .instance_id("i-1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidSignatureException");
    ids.push(request_id(&e));
    expected.push(("DeregisterInstance", "", Some("InvalidSignatureException")));

    let lines = lines_for(&log, &ids);
    for (line, (event, user, error)) in lines.iter().zip(&expected) {
        assert_eq!(line["eventName"], *event, "{line:#}");
        assert_eq!(line["eventSource"], "servicediscovery.amazonaws.com");
        assert_eq!(line["sourceIPAddress"], "127.0.0.1", "{line:#}");
        assert!(
            line["userAgent"].as_str().unwrap().contains("aws-sdk-rust"),
            "{line:#}"
        );
        if user.is_empty() {
            assert_eq!(line["userIdentity"]["type"], "Unknown", "{line:#}");
        } else {
            assert_eq!(line["userIdentity"]["type"], "IAMUser", "{line:#}");
            assert_eq!(line["userIdentity"]["userName"], *user, "{line:#}");
            assert_eq!(
                line["userIdentity"]["arn"],
                format!("arn:aws:iam::000000000000:user/{user}")
            );
        }
        match error {
            None => assert!(line.get("errorCode").is_none(), "{line:#}"),
            Some(code) => {
                assert_eq!(line["errorCode"], *code, "{line:#}");
                assert!(!line["errorMessage"].as_str().unwrap().is_empty());
            }
        }
        assert!(line["eventTime"].as_str().unwrap().ends_with('Z'));
        assert!(!line["eventID"].as_str().unwrap().is_empty());
    }
    // The write names what it touched and what it returned.
    let register = &lines[0];
    assert_eq!(register["requestParameters"]["InstanceId"], "i-1");
    assert!(register["responseElements"]["OperationId"].is_string());
    assert_eq!(register["readOnly"], false);
    let arn = register["resources"][0]["ARN"].as_str().unwrap();
    assert!(
        arn.ends_with(&format!(":service/{inventory_svc}")),
        "{register:#}"
    );
    assert_eq!(
        register["resources"][0]["type"],
        "AWS::ServiceDiscovery::Service"
    );
    // The denial's message names the action it refused.
    assert!(
        lines[2]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("servicediscovery:DeleteNamespace"),
        "{:#}",
        lines[2]
    );
    assert_eq!(lines[4]["readOnly"], true);
    // The setup's writes are there too.
    let all = audit_lines(&log);
    for event in ["CreateHttpNamespace", "CreateService"] {
        assert!(
            all.iter()
                .any(|l| l["eventName"] == event && l["userIdentity"]["userName"] == "admin"),
            "no {event} line"
        );
    }
    assert_eq!(
        server.metric("waymark_audit_dropped_total"),
        Some(0.0),
        "nothing dropped"
    );
}

#[tokio::test]
async fn a_blocked_audit_sink_never_stalls_the_api_and_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A named pipe nobody reads yet: the writer cannot even open it.
    let fifo = dir.path().join("audit.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let server = Server::start_with(Options {
        args: vec![
            "--audit-log".into(),
            fifo.display().to_string(),
            "--audit-buffer".into(),
            "4".into(),
        ],
        ..Options::default()
    });
    let client = server.client();
    let ns = http_namespace(&client, "blocked.example").await;
    let svc = create_service(&client, &ns, "web").await;
    let calls = 60;
    let run = async {
        for i in 0..calls {
            client
                .register_instance()
                .service_id(&svc)
                .instance_id(format!("i-{i}"))
                .attributes("AWS_INSTANCE_IPV4", format!("10.0.0.{i}"))
                .send()
                .await
                .unwrap();
        }
    };
    // Bounded so that a stalled API fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the API stalled behind its audit sink");
    let listed = client
        .list_instances()
        .service_id(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.instances().len(), calls);
    // 62 writes, 4 queued: the rest were dropped, and counted.
    let dropped = server.metric("waymark_audit_dropped_total").unwrap();
    assert!(dropped >= (calls + 2 - 4) as f64, "dropped {dropped}");

    // A reader comes: the queued lines flow, each a complete JSON record.
    let reader = std::thread::spawn(move || {
        let file = std::fs::File::open(&fifo).unwrap();
        let mut lines = BufReader::new(file).lines();
        let first = lines.next().unwrap().unwrap();
        serde_json::from_str::<Value>(&first).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "no audit line reached the pipe");
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = reader.join().unwrap();
    assert_eq!(first["eventName"], "CreateHttpNamespace");
    assert_eq!(first["userIdentity"]["type"], "Anonymous");
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_is_throttled_and_the_sdk_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    // A burst of 3, then one call every 5 seconds per principal.
    let server = secured_with(&[
        "--rate-limit",
        "0.2",
        "--rate-limit-burst",
        "3",
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    let once = server.client_with(ADMIN.0, ADMIN.1, RetryConfig::disabled());
    for _ in 0..3 {
        once.list_namespaces().send().await.unwrap();
    }
    let e = once.list_namespaces().send().await.unwrap_err();
    assert_eq!(code(&e), "ThrottlingException");
    assert_eq!(e.message(), Some("Rate exceeded"));
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 400);
    let throttled_id = request_id(&e);
    // Another principal has its own allowance.
    server
        .client_with(INVENTORY.0, INVENTORY.1, RetryConfig::disabled())
        .list_namespaces()
        .send()
        .await
        .unwrap();

    // The SDK's own retry (backoff on ThrottlingException) gets through
    // once the bucket refills.
    let before = server.metric("waymark_api_throttled_total").unwrap();
    let patient = server.client_with(
        ADMIN.0,
        ADMIN.1,
        RetryConfig::standard()
            .with_max_attempts(10)
            .with_max_backoff(Duration::from_secs(4)),
    );
    patient.list_namespaces().send().await.unwrap();
    let after = server.metric("waymark_api_throttled_total").unwrap();
    assert!(after > before, "the retrying call was never throttled");

    // Refusals are audited even though reads are not.
    let line = &lines_for(&log, &[throttled_id])[0];
    assert_eq!(line["errorCode"], "ThrottlingException");
    assert_eq!(line["userIdentity"]["userName"], "admin");
    assert!(
        !audit_lines(&log)
            .iter()
            .any(|l| l["eventName"] == "ListNamespaces" && l.get("errorCode").is_none()),
        "successful reads are not audited without --audit-reads"
    );
}

#[tokio::test]
async fn malformed_authorization_headers_each_get_a_specific_error_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = secured_with(&["--audit-log", log.to_str().unwrap()]);
    let (_, svc, _) = setup(&server, "malformed.example").await;
    let body = format!(
        r#"{{"ServiceId":"{svc}","InstanceId":"forged","Attributes":{{"AWS_INSTANCE_IPV4":"10.9.9.9"}}}}"#
    );
    let signing = Signing {
        operation: "RegisterInstance",
        key: ADMIN,
        time: SystemTime::now(),
        body: &body,
        presign_for: None,
    };
    let (path, headers) = sign(&server, &signing);
    let auth = headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap();
    // "AWS4-HMAC-SHA256 Credential=<scope>, SignedHeaders=<h>, Signature=<sig>"
    let param = |name: &str| {
        auth.split([' ', ','])
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let (scope, signed, sig) = (
        param("Credential"),
        param("SignedHeaders"),
        param("Signature"),
    );
    let parts: Vec<&str> = scope.split('/').collect();
    let (akid, date, region) = (parts[0], parts[1], parts[2]);
    let with_scope = |s: &str| {
        format!("AWS4-HMAC-SHA256 Credential={s}, SignedHeaders={signed}, Signature={sig}")
    };
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (
            "AWS4-HMAC-SHA256".into(),
            400,
            "IncompleteSignatureException",
            "requires 'Credential'",
        ),
        (
            format!("AWS4-HMAC-SHA256 SignedHeaders={signed}, Signature={sig}"),
            400,
            "IncompleteSignatureException",
            "requires 'Credential'",
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential={scope}, Signature={sig}"),
            400,
            "IncompleteSignatureException",
            "requires 'SignedHeaders'",
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={signed}"),
            400,
            "IncompleteSignatureException",
            "requires 'Signature'",
        ),
        (
            auth.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
            400,
            "IncompleteSignatureException",
            "Unsupported Authorization algorithm",
        ),
        (
            "Basic YWRtaW46c2VjcmV0".into(),
            400,
            "IncompleteSignatureException",
            "algorithm 'Basic'",
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=, Signature={sig}"),
            400,
            "IncompleteSignatureException",
            "must not be empty",
        ),
        (
            format!(
                "AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=x-amz-date, Signature={sig}"
            ),
            400,
            "IncompleteSignatureException",
            "'Host' must be a 'SignedHeader'",
        ),
        (
            auth.replace(&signed, &signed.to_uppercase()),
            400,
            "IncompleteSignatureException",
            "invalid header name",
        ),
        (
            auth.replace(&signed, &format!("x-amz-date;{signed}")),
            400,
            "IncompleteSignatureException",
            "must be sorted",
        ),
        (
            auth.replace(&signed, &format!("{signed};zz-not-sent")),
            400,
            "IncompleteSignatureException",
            "which the request does not have",
        ),
        (
            auth.replace(&sig, &"z".repeat(64)),
            400,
            "IncompleteSignatureException",
            "hexadecimal",
        ),
        (
            auth.replace(&sig, &sig[..10]),
            400,
            "IncompleteSignatureException",
            "64 hexadecimal characters",
        ),
        (
            with_scope(&format!("{akid}/{date}/{region}/servicediscovery")),
            400,
            "IncompleteSignatureException",
            "5 slash-separated parts",
        ),
        (
            with_scope(&format!("/{date}/{region}/servicediscovery/aws4_request")),
            400,
            "IncompleteSignatureException",
            "empty access key ID",
        ),
        (
            with_scope(&format!(
                "{akid}/not-a-date/{region}/servicediscovery/aws4_request"
            )),
            400,
            "IncompleteSignatureException",
            "must be YYYYMMDD",
        ),
        (
            with_scope(&format!(
                "{akid}/{date}/{region}/servicediscovery/aws5_request"
            )),
            403,
            "InvalidSignatureException",
            "terminator",
        ),
        (
            with_scope(&format!(
                "{akid}/19990101/{region}/servicediscovery/aws4_request"
            )),
            403,
            "InvalidSignatureException",
            "!=",
        ),
        (
            with_scope(&format!(
                "{akid}/{date}/eu-north-9/servicediscovery/aws4_request"
            )),
            403,
            "InvalidSignatureException",
            "valid region",
        ),
        (
            with_scope(&format!("{akid}/{date}/{region}/sqs/aws4_request")),
            403,
            "InvalidSignatureException",
            "correct service",
        ),
        (
            with_scope(&format!(
                "AKIANOBODY/{date}/{region}/servicediscovery/aws4_request"
            )),
            403,
            "UnrecognizedClientException",
            "security token",
        ),
        (
            format!("{auth}, Signature={sig}"),
            400,
            "IncompleteSignatureException",
            "more than one 'Signature'",
        ),
        (
            format!("{auth}, Foo=bar"),
            400,
            "IncompleteSignatureException",
            "Unknown Authorization parameter 'Foo'",
        ),
        (
            format!("{auth}, junk"),
            400,
            "IncompleteSignatureException",
            "not of the form name=value",
        ),
        (
            auth.replace(&sig, &"0".repeat(64)),
            403,
            "InvalidSignatureException",
            "does not match",
        ),
    ];
    assert!(cases.len() >= 20);
    for (value, status, kind, fragment) in &cases {
        let mut forged = headers.clone();
        for (name, v) in &mut forged {
            if name == "authorization" {
                *v = value.clone();
            }
        }
        let (got, answer) = post(&server, &path, &forged, &body);
        assert_eq!(
            (got, error_type(&answer).as_str()),
            (*status, *kind),
            "{value}: {answer}"
        );
        assert!(
            answer.contains(fragment),
            "{value}: {answer} should mention {fragment:?}"
        );
    }
    // Nothing was registered, and every refusal is on record.
    let admin = server.client_as(ADMIN.0, ADMIN.1);
    let listed = admin
        .list_instances()
        .service_id(&svc)
        .send()
        .await
        .unwrap();
    assert!(listed.instances().is_empty(), "{listed:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let refused = audit_lines(&log)
            .into_iter()
            .filter(|l| l["eventName"] == "RegisterInstance" && l.get("errorCode").is_some())
            .count();
        if refused == cases.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refused} of {} refusals audited",
            cases.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the genuine request still works.
    let (got, answer) = post(&server, &path, &headers, &body);
    assert_eq!(got, 200, "{answer}");
}
