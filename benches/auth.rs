//! The CPU cost of access control per request, split into its parts: SigV4
//! verification of a DiscoverInstances request (canonical request, payload
//! hash, signing-key derivation, HMAC, compare) and the policy decision with
//! 1,000 statements, in the shapes that make evaluation cheap (exact
//! actions, looked up by name) and expensive (wildcard actions with
//! conditions, every statement examined).
//!
//!   cargo bench --bench auth
//!   WAYMARK_BENCH_ITERATIONS=20000 cargo bench --bench auth
//!
//! End-to-end requests/s with SigV4 on and off: scripts/bench-auth.sh.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use waymark::auth::policy::Context;
use waymark::auth::{
    Decision, Payload, PolicySet, Request, SignedRequest, Verifier, VerifierConfig,
};

const AKID: &str = "AKIABENCHMARK0000001";
const SECRET: &str = "bench-secret-0123456789abcdef0123";
const BODY: &str = r#"{"NamespaceName":"bench","ServiceName":"inventory","QueryParameters":{"environment":"prod"}}"#;

fn iterations() -> u32 {
    std::env::var("WAYMARK_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Runs `f` `n` times; returns nanoseconds per call (best of three rounds,
/// so a scheduling hiccup on a shared machine does not count).
fn time(n: u32, mut f: impl FnMut() -> bool) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let mut ok = 0u32;
        for _ in 0..n {
            ok += u32::from(std::hint::black_box(f()));
        }
        assert_eq!(ok, n, "every call must succeed");
        best = best.min(started.elapsed().as_nanos() as f64 / f64::from(n));
    }
    best
}

/// The headers the AWS SDK's signer puts on a DiscoverInstances request.
fn signed_headers(now: SystemTime) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = aws_credential_types::Credentials::new(AKID, SECRET, None, None, "bench").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("servicediscovery")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let mut headers = vec![
        ("host".to_string(), "data-waymark.example:8080".to_string()),
        (
            "content-type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        (
            "x-amz-target".to_string(),
            "Route53AutoNaming_v20170314.DiscoverInstances".to_string(),
        ),
        (
            "user-agent".to_string(),
            "aws-sdk-rust/1.0 os/linux lang/rust".to_string(),
        ),
    ];
    let request = SignableRequest::new(
        "POST",
        "http://data-waymark.example:8080/",
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(BODY.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    for (name, value) in instructions.headers() {
        headers.push((name.to_string(), value.to_string()));
    }
    headers
}

fn policy(statements: impl Iterator<Item = Value>) -> PolicySet {
    let doc = json!({"Version": "2012-10-17", "Statement": statements.collect::<Vec<_>>()});
    PolicySet::parse([&doc]).unwrap()
}

fn main() {
    let n = iterations();
    println!("auth bench: {n} iterations per case, best of 3 rounds");
    println!(
        "machine: {} vCPU",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    // --- SigV4 -----------------------------------------------------------
    let now = SystemTime::now();
    let headers = signed_headers(now);
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let verifier = Verifier::new(VerifierConfig::new("us-east-1"));
    let secrets = |akid: &str| (akid == AKID).then(|| SECRET.to_string());
    let request = SignedRequest {
        method: "POST",
        path: "/",
        query: "",
        headers: &pairs,
        payload: Payload::Bytes(BODY.as_bytes()),
    };
    let at = now + Duration::from_secs(1);
    let verify = time(n, || verifier.verify(&request, at, &secrets).is_ok());
    let mut forged = headers.clone();
    for (name, value) in &mut forged {
        if name == "authorization" {
            let cut = value.len() - 64;
            value.replace_range(cut.., &"0".repeat(64));
        }
    }
    let forged_pairs: Vec<(&str, &str)> = forged
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let bad = SignedRequest {
        headers: &forged_pairs,
        ..request
    };
    let refuse = time(n, || verifier.verify(&bad, at, &secrets).is_err());
    println!();
    println!("| SigV4 verification of a DiscoverInstances request | µs per request |");
    println!("|---|---|");
    println!("| valid signature (accepted) | {:.2} |", verify / 1000.0);
    println!("| wrong signature (refused) | {:.2} |", refuse / 1000.0);

    // --- policies --------------------------------------------------------
    let services: Vec<String> = (0..1000).map(|i| format!("service-{i:04}")).collect();
    let arn =
        "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-0123456789abcdef".to_string();
    let resources = vec![arn];
    let context_for = |service: &str| -> Context {
        [
            (
                "servicediscovery:servicename".to_string(),
                vec![service.to_string()],
            ),
            (
                "servicediscovery:namespacename".to_string(),
                vec!["bench".to_string()],
            ),
        ]
        .into_iter()
        .collect()
    };
    let last = context_for(&services[999]);
    let none = context_for("not-listed");
    // 1,000 statements, each allowing RegisterInstance in one service: the
    // action lookup finds them all, the condition picks one.
    let exact = policy(services.iter().map(|s| {
        json!({"Effect": "Allow", "Action": "servicediscovery:RegisterInstance", "Resource": "*",
               "Condition": {"StringEquals": {"servicediscovery:ServiceName": s}}})
    }));
    // 1,000 statements with wildcard actions: each must be matched by pattern.
    let wildcard = policy(services.iter().map(|s| {
        json!({"Effect": "Allow", "Action": ["servicediscovery:Register*", "servicediscovery:Deregister*"],
               "Resource": "arn:aws:servicediscovery:*:*:service/*",
               "Condition": {"StringLike": {"servicediscovery:ServiceName": format!("{s}*")}}})
    }));
    // 999 Allows of reads on other services and one Deny at the end.
    let mut others: Vec<Value> = (0..999)
        .map(|i| json!({"Effect": "Allow", "Action": ["servicediscovery:GetService", "servicediscovery:ListInstances"],
                        "Resource": format!("arn:aws:servicediscovery:us-east-1:000000000000:service/srv-{i:04}")}))
        .collect();
    others.push(json!({"Sid": "NoRegister", "Effect": "Deny", "Action": "servicediscovery:RegisterInstance", "Resource": "*"}));
    let deny = policy(others.into_iter());
    fn ask<'a>(resources: &'a [String], context: &'a Context) -> Request<'a> {
        Request {
            action: "servicediscovery:RegisterInstance",
            resources,
            context,
        }
    }
    let cases: [(&str, &PolicySet, &Context, Decision); 5] = [
        (
            "1,000 exact-action statements, the last one allows",
            &exact,
            &last,
            Decision::Allow,
        ),
        (
            "1,000 exact-action statements, none allows",
            &exact,
            &none,
            Decision::ImplicitDeny,
        ),
        (
            "1,000 wildcard-action statements, the last one allows",
            &wildcard,
            &last,
            Decision::Allow,
        ),
        (
            "1,000 wildcard-action statements, none allows",
            &wildcard,
            &none,
            Decision::ImplicitDeny,
        ),
        (
            "999 Allows of other actions, then an explicit Deny",
            &deny,
            &last,
            Decision::ExplicitDeny(Some("NoRegister".into())),
        ),
    ];
    println!();
    println!("| policy evaluation (RegisterInstance, 1,000 statements) | µs per decision |");
    println!("|---|---|");
    let m = (n / 20).max(100);
    for (name, set, context, want) in cases {
        assert_eq!(set.evaluate(&ask(&resources, context)), want, "{name}");
        let ns = time(m, || set.evaluate(&ask(&resources, context)) == want);
        println!("| {name} | {:.2} |", ns / 1000.0);
    }
}
