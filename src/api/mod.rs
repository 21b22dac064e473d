//! The Cloud Map API: AWS JSON 1.1 over HTTP (`POST /` with
//! `X-Amz-Target: Route53AutoNaming_v20170314.<Operation>`), a thin layer over
//! [`crate::registry`]. Unmodified AWS SDKs and the AWS CLI talk to it given
//! an endpoint URL.

mod access;
pub mod audit;
pub mod discover;
mod handlers;
pub mod limits;
pub mod listener;

pub use access::{Access, Identity};
pub use audit::{AuditConfig, AuditLog, AuditWriter, Sink};
pub use handlers::OPERATIONS;
pub use limits::{RateLimit, Throttle};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::serve::ListenerExt;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tokio::net::TcpListener;

use crate::registry::{self, Registry};

/// The `X-Amz-Target` prefix of every Cloud Map operation.
pub const TARGET_PREFIX: &str = "Route53AutoNaming_v20170314.";
/// The largest request body accepted. Cloud Map's largest requests (30
/// attributes of 1 KiB, 50 tags) are far smaller.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The content type of every response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Errors of the API server itself (not of requests, which become
/// [`ApiError`] responses).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not bind.
    #[error("cannot listen on {addr} for the Cloud Map API: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("Cloud Map API server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// Metrics could not be registered.
    #[error("API metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The listener (TLS, connection limit) could not start.
    #[error(transparent)]
    Listener(#[from] listener::Error),
}

/// An error response: Cloud Map's `__type`, a message, the HTTP status and
/// any extra members the error shape defines (e.g. `NamespaceId`).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The `__type`.
    pub kind: &'static str,
    /// Human-readable message.
    pub message: String,
    /// HTTP status (400 for every modelled Cloud Map error).
    pub status: StatusCode,
    /// Extra members of the error shape.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// A 400 error of the given type.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
            extra: serde_json::Map::new(),
        }
    }

    /// `InvalidInput` with a message naming the field.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidInput", message)
    }

    fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> Self {
        let kind = e.aws_type();
        let message = e.to_string();
        match e {
            registry::Error::NamespaceAlreadyExists {
                namespace_id,
                creator_request_id,
                ..
            } => Self::new(kind, message)
                .with("NamespaceId", namespace_id)
                .with("CreatorRequestId", creator_request_id),
            registry::Error::ServiceAlreadyExists {
                service_id,
                service_arn,
                creator_request_id,
                ..
            } => Self::new(kind, message)
                .with("ServiceId", service_id)
                .with("ServiceArn", service_arn)
                .with("CreatorRequestId", creator_request_id),
            registry::Error::TooManyTags { resource, .. } => {
                Self::new(kind, message).with("ResourceName", resource)
            }
            // Retryable: the SDKs retry a 503 on their own.
            registry::Error::Store(ref store) if store.is_retryable() => {
                tracing::warn!(error = %message, "registry write not applied (retryable)");
                Self {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    ..Self::new(kind, message)
                }
            }
            registry::Error::Store(_) => {
                tracing::error!(error = %message, "registry write failed");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    ..Self::new(kind, message)
                }
            }
            _ => Self::new(kind, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert("__type".into(), self.kind.into());
        body.insert("Message".into(), self.message.into());
        let mut resp = (self.status, serde_json::Value::Object(body).to_string()).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Ok(v) = HeaderValue::from_str(self.kind) {
            headers.insert("x-amzn-ErrorType", v);
        }
        resp
    }
}

/// Request metrics.
#[derive(Clone)]
struct Metrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl Metrics {
    fn register(prom: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "waymark_api_requests_total",
                "Cloud Map API requests by operation and result (OK or the error type).",
            ),
            &["operation", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "waymark_api_request_duration_seconds",
                "Cloud Map API request latency by operation.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["operation"],
        )?;
        prom.register(Box::new(requests.clone()))?;
        prom.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    metrics: Metrics,
    guards: Arc<Guards>,
}

/// What stands between a caller and the registry: who may call (and do
/// what), the audit log of what they did, and how fast they may call.
#[derive(Debug, Clone)]
pub struct Guards {
    /// Authentication and authorization.
    pub access: Access,
    /// The audit log, when one is kept.
    pub audit: Option<AuditLog>,
    /// Per-caller rate limits, when set.
    pub throttle: Option<Throttle>,
}

/// Binds the API listener (separately from serving, so a bad address fails
/// start-up before anything else runs).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves the Cloud Map API on `listener` (plain or TLS, at most
/// `settings.max_connections` at once) until `shutdown` resolves. Handlers
/// see the caller's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    settings: listener::Settings,
    registry: Arc<Registry>,
    guards: Guards,
    prom: prometheus::Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let app = router(registry, guards, &prom)?;
    // The peer's address reaches the handler: the audit log records it and
    // unauthenticated callers are rate-limited by it.
    // axum provides `ConnectInfo<SocketAddr>` for any listener behind
    // `tap_io` but cannot for ours directly (the orphan rule keeps us from
    // implementing its `Connected` for `SocketAddr`), so the listener goes
    // through a tap, which is a no-op.
    let listener = listener::ApiListener::new(listener, settings, &prom)?.tap_io(|_| {});
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(Error::Serve)
}

/// The API's HTTP routes, for embedding and for tests.
pub fn router(
    registry: Arc<Registry>,
    guards: Guards,
    prom: &prometheus::Registry,
) -> Result<Router, Error> {
    let state = AppState {
        registry,
        metrics: Metrics::register(prom)?,
        guards: Arc::new(guards),
    };
    Ok(Router::new()
        .route("/", any(handle))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                ..ApiError::new(
                    "UnknownOperationException",
                    "Cloud Map operations are POSTed to /",
                )
            }
        })
        .with_state(state))
}

/// What became known about a request on its way in, for the audit log.
#[derive(Default)]
struct Seen {
    body: Bytes,
    caller: Option<Identity>,
    /// The caller's principal, as of the configuration its signature was
    /// checked against.
    principal: Option<Arc<crate::auth::Caller>>,
    asked: Option<crate::auth::RequestContext>,
}

/// Error types that mean the caller was refused (not that the call
/// failed): always audited.
fn refused(err: &ApiError) -> bool {
    err.status == StatusCode::FORBIDDEN
        || matches!(err.kind, "AccessDeniedException" | "ThrottlingException")
}

async fn handle(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let time = SystemTime::now();
    let (parts, body) = request.into_parts();
    let source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or("");
    let label = if handlers::is_known(operation) {
        operation
    } else {
        "unknown"
    };
    let mut seen = Seen::default();
    let result = respond(&state, &parts, body, source, target, operation, &mut seen).await;
    let request_id = audit::new_id();
    if let Some(audit) = &state.guards.audit {
        let logged = match &result {
            Ok(_) => audit.records(operation),
            Err(e) => audit.records(operation) || refused(e),
        };
        if logged {
            audit.log(&audit::Call {
                time,
                operation: label,
                source,
                user_agent: parts
                    .headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
                caller: seen.caller.as_ref(),
                open: !state.guards.access.is_checked(),
                asked: seen.asked.as_ref(),
                body: &seen.body,
                response: result.as_ref().ok().map(String::as_str),
                error: result.as_ref().err().map(|e| (e.kind, e.message.as_str())),
                status: match &result {
                    Ok(_) => 200,
                    Err(e) => e.status.as_u16(),
                },
                request_id: &request_id,
                elapsed: started.elapsed(),
            });
        }
    }
    let mut response = match result {
        Ok(body) => {
            state
                .metrics
                .requests
                .with_label_values(&[label, "OK"])
                .inc();
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            resp
        }
        Err(err) => {
            state
                .metrics
                .requests
                .with_label_values(&[label, err.kind])
                .inc();
            err.into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        // The SDKs surface it (`request_id()`, boto3's `RequestId`): it
        // finds the call's audit line.
        response.headers_mut().insert("x-amzn-RequestId", v);
    }
    state
        .metrics
        .duration
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Reads, authenticates, rate-limits and runs one request, recording in
/// `seen` what the audit log needs.
async fn respond(
    state: &AppState,
    parts: &Parts,
    body: Body,
    source: Option<SocketAddr>,
    target: &str,
    operation: &str,
    seen: &mut Seen,
) -> Result<String, ApiError> {
    if parts.method != axum::http::Method::POST {
        return Err(ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            ..ApiError::new("UnknownOperationException", "Cloud Map operations use POST")
        });
    }
    seen.body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..ApiError::new(
                "SerializationException",
                format!("request body larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let account = &state.registry.config().scope.account;
    let authenticated = state.guards.access.authenticate(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &seen.body,
        account,
    )?;
    if let Some((identity, principal)) = authenticated {
        seen.caller = Some(identity);
        seen.principal = Some(principal);
    }
    // Charged after authentication, so a caller is charged only for what
    // it proved it sent.
    if let Some(throttle) = &state.guards.throttle {
        throttle.check(seen.caller.as_ref(), source)?;
    }
    dispatch(state, target, operation, seen).await
}

async fn dispatch(
    state: &AppState,
    target: &str,
    operation: &str,
    seen: &mut Seen,
) -> Result<String, ApiError> {
    if target.is_empty() {
        return Err(ApiError::new(
            "UnknownOperationException",
            "missing X-Amz-Target header",
        ));
    }
    if !handlers::is_known(operation) {
        return Err(ApiError::new(
            "UnknownOperationException",
            format!("unknown operation {target:?}"),
        ));
    }
    // Authorized before the handler runs, so a refused call changes nothing.
    // The context is read from the registry before the call too: a deleted
    // service's ARN is gone afterwards.
    let guards = &state.guards;
    let audited = guards.audit.as_ref().is_some_and(|a| a.records(operation));
    if guards.access.is_checked() || audited {
        // Condition keys are what the principal's conditions and the audit
        // line's reader may need; a principal without conditions never
        // reads them.
        let with_keys = audited
            || seen
                .principal
                .as_ref()
                .is_some_and(|p| p.policies.has_conditions());
        let asked = access::context(&state.registry, operation, &seen.body, with_keys);
        let caller = seen.caller.as_ref().zip(seen.principal.as_deref());
        guards.access.authorize(caller, &asked)?;
        seen.asked = Some(asked);
    }
    let body = seen.body.clone();
    // Discovery is a pure in-memory read on the hot path: answer inline.
    // Everything else may write (and fsync), so it runs off the async workers.
    if handlers::is_inline(operation) {
        return handlers::handle(&state.registry, operation, &body);
    }
    let registry = state.registry.clone();
    let operation = operation.to_string();
    tokio::task::spawn_blocking(move || handlers::handle(&registry, &operation, &body))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            ..ApiError::new("InternalFailure", format!("request handler failed: {e}"))
        })?
}
