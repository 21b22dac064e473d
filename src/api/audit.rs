//! The audit log: one JSON line per API call worth recording, shaped like a
//! CloudTrail event (`eventTime`, `userIdentity`, `sourceIPAddress`,
//! `eventName`, `requestParameters`, `resources`, `errorCode`, …) so tools
//! that read CloudTrail records read these.
//!
//! Every mutating call is recorded, and every refused one (bad signature,
//! denied, throttled): those are what an investigation needs. Reads are
//! recorded only when asked for (`--audit-reads`): DiscoverInstances runs at
//! tens of thousands per second.
//!
//! Lines go through a bounded queue to one writer thread, so a slow or
//! blocked sink (a full disk, a pipe nobody reads) never stalls the API: when
//! the queue is full the line is dropped and counted in
//! `waymark_audit_dropped_total`, and a warning is logged, never silently.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use prometheus::{IntCounter, IntCounterVec, Opts};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tracing::{error, warn};

use super::Identity;
use crate::auth::RequestContext;

/// Request bodies larger than this are recorded as truncated, not copied
/// into the line (Cloud Map's requests are far smaller; a huge body is
/// recorded by its size).
const MAX_RECORDED_PARAMETERS: usize = 16 * 1024;

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened for appending.
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread could not start.
    #[error("cannot start the audit log writer: {0}")]
    Thread(#[source] std::io::Error),
    /// The metrics could not be registered.
    #[error("audit metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// The process's standard output (logs go to standard error).
    Stdout,
    /// A file, appended to (created when missing), or a named pipe.
    File(PathBuf),
}

impl Sink {
    /// `-` is standard output, anything else a path.
    pub fn parse(value: &str) -> Self {
        if value == "-" {
            Sink::Stdout
        } else {
            Sink::File(PathBuf::from(value))
        }
    }
}

/// What the audit log records and where.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Where lines go.
    pub sink: Sink,
    /// Record reads (Get*, List*, Discover*) too.
    pub reads: bool,
    /// Lines queued for the writer before new ones are dropped.
    pub buffer: usize,
    /// The region and account the records name.
    pub region: String,
    /// The account id of the registry (CloudTrail's `recipientAccountId`).
    pub account: String,
}

/// One API call, as the HTTP layer saw it.
#[derive(Debug)]
pub struct Call<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    /// The operation (`RegisterInstance`), or empty when unknown.
    pub operation: &'a str,
    /// The peer's address.
    pub source: Option<SocketAddr>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// Who signed it, when it was authenticated.
    pub caller: Option<&'a Identity>,
    /// Whether access is open (no authentication configured).
    pub open: bool,
    /// The action and resources it asked for (computed before it ran).
    pub asked: Option<&'a RequestContext>,
    /// The request body.
    pub body: &'a [u8],
    /// The response body on success.
    pub response: Option<&'a str>,
    /// The error type and message on failure.
    pub error: Option<(&'a str, &'a str)>,
    /// The HTTP status of the response.
    pub status: u16,
    /// The request id returned in `x-amzn-RequestId`.
    pub request_id: &'a str,
    /// Time to answer.
    pub elapsed: Duration,
}

/// Whether `operation` only reads.
pub fn read_only(operation: &str) -> bool {
    ["Get", "List", "Discover"]
        .iter()
        .any(|p| operation.starts_with(p))
}

/// A fresh version-4 UUID from the thread's fast generator (request and
/// event ids; `Uuid::new_v4` asks the OS for randomness on every call).
pub fn new_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// `userIdentity`.
#[derive(Serialize)]
#[serde(tag = "type")]
enum UserIdentity<'a> {
    #[serde(rename = "IAMUser", rename_all = "camelCase")]
    IamUser {
        principal_id: &'a str,
        arn: &'a str,
        account_id: &'a str,
        access_key_id: &'a str,
        user_name: &'a str,
    },
    Anonymous,
    Unknown,
}

/// One entry of `resources`.
#[derive(Serialize)]
struct ResourceRef<'a> {
    #[serde(rename = "ARN")]
    arn: &'a str,
    #[serde(rename = "accountId")]
    account_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// `additionalEventData`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Extra {
    http_status: u16,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_parameters_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_bytes: Option<usize>,
}

/// A JSON document copied into the line: verbatim when it is one line of
/// valid JSON (no tree is built), re-serialized when it spans lines.
enum Json<'a> {
    Raw(&'a RawValue),
    Tree(Value),
    Null,
}

impl Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Raw(raw) => raw.serialize(s),
            Json::Tree(v) => v.serialize(s),
            Json::Null => s.serialize_unit(),
        }
    }
}

impl<'a> Json<'a> {
    /// `text` as JSON, or `None` when it is not JSON.
    fn of(text: &'a [u8]) -> Option<Self> {
        let raw: &RawValue = serde_json::from_slice(text).ok()?;
        if raw.get().contains(['\n', '\r']) {
            // One record per line: a pretty-printed body is compacted.
            return serde_json::from_str(raw.get()).ok().map(Json::Tree);
        }
        Some(Json::Raw(raw))
    }
}

/// The CloudTrail event, serialized straight into the line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    event_version: &'static str,
    event_time: String,
    event_source: &'static str,
    event_name: &'a str,
    aws_region: &'a str,
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: Option<String>,
    user_agent: Option<&'a str>,
    user_identity: UserIdentity<'a>,
    request_parameters: Json<'a>,
    response_elements: Json<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
    #[serde(rename = "requestID")]
    request_id: &'a str,
    #[serde(rename = "eventID")]
    event_id: &'a str,
    read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<ResourceRef<'a>>,
    event_type: &'static str,
    management_event: bool,
    recipient_account_id: &'a str,
    additional_event_data: Extra,
}

fn build<'a>(
    call: &'a Call<'a>,
    region: &'a str,
    account: &'a str,
    event_id: &'a str,
) -> Record<'a> {
    let event_time = jiff::Timestamp::try_from(call.time)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let user_identity = match (call.caller, call.open) {
        (Some(c), _) => UserIdentity::IamUser {
            principal_id: &c.access_key_id,
            arn: &c.arn,
            account_id: account,
            access_key_id: &c.access_key_id,
            user_name: &c.name,
        },
        (None, true) => UserIdentity::Anonymous,
        // Authentication failed: nobody is proven.
        (None, false) => UserIdentity::Unknown,
    };
    let (request_parameters, truncated) = if call.body.is_empty() {
        (Json::Null, false)
    } else if call.body.len() > MAX_RECORDED_PARAMETERS {
        (Json::Null, true)
    } else {
        match Json::of(call.body) {
            Some(json) => (json, false),
            None => (Json::Null, true),
        }
    };
    let read_only = read_only(call.operation);
    // Reads' answers can be large and are not what an audit needs; the
    // writes' answers are small (an OperationId, the created resource).
    let response_elements = call
        .response
        .filter(|_| !read_only)
        .and_then(|r| Json::of(r.as_bytes()))
        .unwrap_or(Json::Null);
    let resources = call
        .asked
        .map(|asked| {
            asked
                .resources
                .iter()
                .filter(|r| r.as_str() != "*")
                .map(|arn| ResourceRef {
                    arn,
                    account_id: account,
                    kind: resource_type(arn),
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        event_version: "1.09",
        event_time,
        event_source: "servicediscovery.amazonaws.com",
        event_name: if call.operation.is_empty() {
            "Unknown"
        } else {
            call.operation
        },
        aws_region: region,
        source_ip_address: call.source.map(|a| a.ip().to_string()),
        user_agent: call.user_agent,
        user_identity,
        request_parameters,
        response_elements,
        error_code: call.error.map(|(code, _)| code),
        error_message: call.error.map(|(_, message)| message),
        request_id: call.request_id,
        event_id,
        read_only,
        resources,
        event_type: "AwsApiCall",
        management_event: true,
        recipient_account_id: account,
        additional_event_data: Extra {
            http_status: call.status,
            duration_ms: (call.elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            request_parameters_truncated: truncated.then_some(true),
            request_bytes: truncated.then_some(call.body.len()),
        },
    }
}

/// The audit line of `call`: one line of JSON and its newline.
pub fn line(call: &Call<'_>, region: &str, account: &str, event_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + call.body.len().min(MAX_RECORDED_PARAMETERS));
    // Borrowed strings and already-validated JSON: writing into a Vec
    // cannot fail.
    let _ = serde_json::to_writer(&mut out, &build(call, region, account, event_id));
    out.push(b'\n');
    out
}

/// CloudFormation's resource type of a Cloud Map ARN, as CloudTrail names
/// resources.
fn resource_type(arn: &str) -> &'static str {
    let kind = arn.rsplit(':').next().unwrap_or("");
    if kind.starts_with("namespace/") {
        "AWS::ServiceDiscovery::Namespace"
    } else if kind.starts_with("service/") {
        "AWS::ServiceDiscovery::Service"
    } else {
        "AWS::ServiceDiscovery::Resource"
    }
}

#[derive(Debug, Clone)]
struct Metrics {
    lines: IntCounterVec,
    dropped: IntCounter,
}

/// The API's handle on the audit log: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: SyncSender<Vec<u8>>,
    reads: bool,
    region: Arc<str>,
    account: Arc<str>,
    metrics: Metrics,
    /// Set once the first drop was logged, so a stuck sink logs one warning
    /// (the counter keeps the count).
    warned: Arc<AtomicBool>,
}

/// The writer thread; [`AuditWriter::finish`] waits until every queued
/// line is written.
#[derive(Debug)]
pub struct AuditWriter {
    thread: JoinHandle<()>,
}

impl AuditWriter {
    /// Waits for the writer to drain the queue and flush, once every
    /// [`AuditLog`] handle is dropped.
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}

impl AuditLog {
    /// Opens `config.sink` and starts its writer. A regular file is opened
    /// here, so a bad path fails start-up; a named pipe is opened by the
    /// writer, because opening one blocks until a reader comes.
    pub fn open(
        config: &AuditConfig,
        prom: &prometheus::Registry,
    ) -> Result<(Self, AuditWriter), AuditError> {
        let lines = IntCounterVec::new(
            Opts::new(
                "waymark_audit_lines_total",
                "Audit lines written (written) or that could not be written (write_error).",
            ),
            &["result"],
        )?;
        let dropped = IntCounter::new(
            "waymark_audit_dropped_total",
            "Audit lines dropped because the writer's queue was full (the sink is slower than the API).",
        )?;
        prom.register(Box::new(lines.clone()))?;
        prom.register(Box::new(dropped.clone()))?;
        let target = match &config.sink {
            Sink::Stdout => Target::Stdout,
            Sink::File(path) if is_fifo(path) => Target::Fifo(path.clone()),
            Sink::File(path) => Target::File(open_append(path)?),
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(config.buffer.max(1));
        let metrics = Metrics { lines, dropped };
        let writer_metrics = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("waymark-audit".into())
            .spawn(move || write_lines(target, rx, writer_metrics))
            .map_err(AuditError::Thread)?;
        Ok((
            Self {
                tx,
                reads: config.reads,
                region: config.region.as_str().into(),
                account: config.account.as_str().into(),
                metrics,
                warned: Arc::new(AtomicBool::new(false)),
            },
            AuditWriter { thread },
        ))
    }

    /// Whether a call of `operation` that succeeds is recorded (refused
    /// calls always are).
    pub fn records(&self, operation: &str) -> bool {
        self.reads || !read_only(operation)
    }

    /// Queues the record of `call`; drops (and counts) it when the queue is
    /// full. Never blocks.
    pub fn log(&self, call: &Call<'_>) {
        let event_id = new_id();
        let line = line(call, &self.region, &self.account, &event_id);
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.dropped.inc();
                if !self.warned.swap(true, Ordering::Relaxed) {
                    warn!(
                        "the audit log's sink is slower than the API: lines are being dropped \
                         (counted in waymark_audit_dropped_total)"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                // The writer stopped (it logged why); the line is lost and counted.
                self.metrics.dropped.inc();
            }
        }
    }
}

enum Target {
    Stdout,
    File(File),
    Fifo(PathBuf),
}

fn is_fifo(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })
}

/// The writer thread: writes each queued line, flushing whenever the queue
/// is momentarily empty (so lines appear promptly, and bursts are written
/// in large chunks), until every sender is gone.
fn write_lines(target: Target, rx: Receiver<Vec<u8>>, metrics: Metrics) {
    let out: Box<dyn Write> = match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(file) => Box::new(file),
        Target::Fifo(path) => match OpenOptions::new().append(true).open(&path) {
            Ok(file) => Box::new(file),
            Err(e) => {
                error!(path = %path.display(), "cannot open the audit log: {e}; audit lines are dropped");
                return;
            }
        },
    };
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let written = metrics.lines.with_label_values(&["written"]);
    let failed = metrics.lines.with_label_values(&["write_error"]);
    let mut last_error: Option<String> = None;
    while let Ok(line) = rx.recv() {
        let mut batch = vec![line];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 1024 {
                break;
            }
        }
        let n = batch.len() as u64;
        let result = batch
            .iter()
            .try_for_each(|l| out.write_all(l))
            .and_then(|()| out.flush());
        match result {
            Ok(()) => {
                written.inc_by(n);
                last_error = None;
            }
            Err(e) => {
                failed.inc_by(n);
                let e = e.to_string();
                if last_error.as_deref() != Some(&e) {
                    error!("cannot write the audit log: {e}");
                    last_error = Some(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The record of `call`, read back from its line.
    fn record(call: &Call<'_>, region: &str, account: &str, event_id: &str) -> Value {
        serde_json::from_slice(&line(call, region, account, event_id)).unwrap()
    }

    fn call<'a>(asked: Option<&'a RequestContext>, caller: Option<&'a Identity>) -> Call<'a> {
        Call {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000),
            operation: "RegisterInstance",
            source: Some("10.1.2.3:40000".parse().unwrap()),
            user_agent: Some("aws-cli/1.45"),
            caller,
            open: false,
            asked,
            body: br#"{"ServiceId":"srv-1","InstanceId":"i-1","Attributes":{"AWS_INSTANCE_IPV4":"10.0.0.1"}}"#,
            response: Some(r#"{"OperationId":"op-1"}"#),
            error: None,
            status: 200,
            request_id: "req-1",
            elapsed: Duration::from_micros(1500),
        }
    }

    #[test]
    fn a_write_is_recorded_with_cloudtrail_fields() {
        let who = Identity {
            name: "inventory-manager".into(),
            access_key_id: "AKIAINVENTORY".into(),
            arn: "arn:aws:iam::123456789012:user/inventory-manager".into(),
        };
        let asked = RequestContext {
            action: "servicediscovery:RegisterInstance".into(),
            resources: vec!["arn:aws:servicediscovery:eu-west-1:123456789012:service/srv-1".into()],
            context: Default::default(),
        };
        let r = record(
            &call(Some(&asked), Some(&who)),
            "eu-west-1",
            "123456789012",
            "ev-1",
        );
        assert_eq!(r["eventTime"], "2026-11-30T00:53:20Z");
        assert_eq!(r["eventSource"], "servicediscovery.amazonaws.com");
        assert_eq!(r["eventName"], "RegisterInstance");
        assert_eq!(r["awsRegion"], "eu-west-1");
        assert_eq!(r["sourceIPAddress"], "10.1.2.3");
        assert_eq!(r["userAgent"], "aws-cli/1.45");
        assert_eq!(r["userIdentity"]["type"], "IAMUser");
        assert_eq!(r["userIdentity"]["userName"], "inventory-manager");
        assert_eq!(r["userIdentity"]["accessKeyId"], "AKIAINVENTORY");
        assert_eq!(r["requestParameters"]["InstanceId"], "i-1");
        assert_eq!(r["responseElements"]["OperationId"], "op-1");
        assert_eq!(r["requestID"], "req-1");
        assert_eq!(r["eventID"], "ev-1");
        assert_eq!(r["readOnly"], false);
        assert_eq!(
            r["resources"],
            json!([{
                "ARN": "arn:aws:servicediscovery:eu-west-1:123456789012:service/srv-1",
                "accountId": "123456789012",
                "type": "AWS::ServiceDiscovery::Service",
            }])
        );
        assert_eq!(r["additionalEventData"]["httpStatus"], 200);
        assert_eq!(r["additionalEventData"]["durationMs"], 1.5);
        assert!(r.get("errorCode").is_none());
    }

    #[test]
    fn refusals_name_the_error_and_no_proven_identity() {
        let mut c = call(None, None);
        c.error = Some(("InvalidSignatureException", "The request signature ..."));
        c.response = None;
        c.status = 403;
        let r = record(&c, "us-east-1", "000000000000", "ev-2");
        assert_eq!(r["userIdentity"], json!({"type": "Unknown"}));
        assert_eq!(r["errorCode"], "InvalidSignatureException");
        assert_eq!(r["responseElements"], Value::Null);
        assert!(r.get("resources").is_none());
        c.open = true;
        let r = record(&c, "us-east-1", "000000000000", "ev-3");
        assert_eq!(r["userIdentity"], json!({"type": "Anonymous"}));
    }

    #[test]
    fn large_or_non_json_bodies_are_recorded_by_size() {
        let big = vec![b' '; MAX_RECORDED_PARAMETERS + 1];
        let mut c = call(None, None);
        c.body = &big;
        let r = record(&c, "us-east-1", "000000000000", "ev");
        assert_eq!(r["requestParameters"], Value::Null);
        assert_eq!(r["additionalEventData"]["requestParametersTruncated"], true);
        assert_eq!(
            r["additionalEventData"]["requestBytes"],
            MAX_RECORDED_PARAMETERS + 1
        );
        c.body = b"not json";
        let r = record(&c, "us-east-1", "000000000000", "ev");
        assert_eq!(r["additionalEventData"]["requestParametersTruncated"], true);
    }

    #[test]
    fn every_record_is_one_line_even_for_a_pretty_printed_body() {
        let mut c = call(None, None);
        let pretty = b"{\n  \"ServiceId\": \"srv-1\",\n  \"InstanceId\": \"i-9\"\n}";
        c.body = pretty;
        c.error = Some(("InvalidInput", "line one\nline two"));
        let line = line(&c, "us-east-1", "000000000000", "ev");
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        let r: Value = serde_json::from_str(text).unwrap();
        assert_eq!(r["requestParameters"]["InstanceId"], "i-9");
        assert_eq!(r["errorMessage"], "line one\nline two");
    }

    #[test]
    fn ids_are_distinct_version_4_uuids() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn reads_are_told_apart() {
        for op in ["GetService", "ListInstances", "DiscoverInstances"] {
            assert!(read_only(op), "{op}");
        }
        for op in ["RegisterInstance", "DeleteNamespace", "TagResource", ""] {
            assert!(!read_only(op), "{op}");
        }
        let mut c = call(None, None);
        c.operation = "DiscoverInstances";
        let r = record(&c, "us-east-1", "000000000000", "ev");
        assert_eq!(r["readOnly"], true);
        // A read's answer is not copied.
        assert_eq!(r["responseElements"], Value::Null);
    }
}
