//! `waymark inspect`: what the registry holds behind a name, and why, asked
//! of a Waymark API endpoint (in or outside the cluster) the way the AWS CLI
//! asks Cloud Map: JSON 1.1 over HTTP(S), SigV4-signed when credentials are
//! in the environment.
//!
//! The calls are Cloud Map's (`ListNamespaces`, `ListServices`,
//! `DiscoverInstances`) and Waymark's `ExplainInstance`; what is shown is
//! turned into rows by pure functions (tested below), printed as a table or
//! as JSON or YAML.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use clap::{Args, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

/// Errors of `waymark inspect`.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The endpoint URL or a flag is unusable.
    #[error("{0}")]
    Usage(String),
    /// The endpoint could not be reached or spoke something else than the API.
    #[error("cannot reach the Waymark API at {endpoint}: {reason}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The API answered with an error.
    #[error("{kind}: {message}")]
    Api {
        /// The Cloud Map error type.
        kind: String,
        /// Its message.
        message: String,
    },
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Output could not be rendered.
    #[error("cannot render the output: {0}")]
    Render(String),
}

type Result<T> = std::result::Result<T, InspectError>;

/// Flags of `waymark inspect`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The Waymark API endpoint (the chart's `<release>` Service, port 8080).
    #[arg(
        long,
        env = "WAYMARK_ENDPOINT",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub endpoint_url: String,
    /// The region requests are signed for (the registry's `--region`).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1", global = true)]
    pub region: String,
    /// CA bundle (PEM) that signed an HTTPS endpoint's certificate; without
    /// it the system's roots are used.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// What to show.
    #[command(subcommand)]
    pub command: InspectCommand,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for a person.
    Table,
    /// JSON, for scripts.
    Json,
    /// YAML.
    Yaml,
}

/// What `waymark inspect` shows.
#[derive(Debug, Clone, Subcommand)]
pub enum InspectCommand {
    /// Every namespace: name, id, type, services.
    Namespaces,
    /// The services of a namespace: name, id, instances, health check.
    Services {
        /// The namespace's name.
        namespace: String,
    },
    /// What DiscoverInstances hands out for a service: id, address, port, health, attributes.
    Instances {
        /// The namespace's name.
        namespace: String,
        /// The service's name.
        service: String,
        /// Only healthy instances (what applications get by default); without it, all.
        #[arg(long)]
        healthy: bool,
        /// Only instances with this attribute value (`key=value`; repeatable, all must match).
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
    },
    /// Why an instance is registered, who owns it and what decides its health.
    Explain {
        /// The namespace's name.
        namespace: String,
        /// The service's name.
        service: String,
        /// The instance id.
        instance: String,
    },
}

/// Runs `waymark inspect` and prints what it shows.
pub async fn inspect(args: InspectArgs) -> Result<()> {
    let client = Client::new(&args)?;
    let shown = match &args.command {
        InspectCommand::Namespaces => Shown::rows(namespace_rows(&list_namespaces(&client).await?)),
        InspectCommand::Services { namespace } => {
            let ns = find_namespace(&client, namespace).await?;
            Shown::rows(service_rows(&list_services(&client, &ns).await?))
        }
        InspectCommand::Instances {
            namespace,
            service,
            healthy,
            filters,
        } => {
            let ns = find_namespace(&client, namespace).await?;
            let http_name = ns["Properties"]["HttpProperties"]["HttpName"]
                .as_str()
                .unwrap_or(namespace);
            let mut body = json!({
                "NamespaceName": http_name,
                "ServiceName": service,
                "HealthStatus": if *healthy { "HEALTHY" } else { "ALL" },
                "MaxResults": 1000,
            });
            let filters = parse_filters(filters)?;
            if !filters.is_empty() {
                body["QueryParameters"] = Value::Object(filters);
            }
            let out = client.call("DiscoverInstances", body).await?;
            Shown::rows(instance_rows(
                out["Instances"].as_array().map_or(&[], |v| v),
            ))
        }
        InspectCommand::Explain {
            namespace,
            service,
            instance,
        } => {
            let ns = find_namespace(&client, namespace).await?;
            let services = list_services(&client, &ns).await?;
            let svc = services
                .iter()
                .find(|s| s["Name"] == service.as_str())
                .ok_or_else(|| {
                    InspectError::NotFound(format!(
                        "namespace {namespace} has no service named {service:?} (it has: {})",
                        names(&services)
                    ))
                })?;
            let out = client
                .call(
                    "ExplainInstance",
                    json!({"ServiceId": svc["Id"], "InstanceId": instance}),
                )
                .await?;
            Shown::Explained(out)
        }
    };
    print!("{}", shown.render(args.output)?);
    Ok(())
}

/// What a subcommand shows.
enum Shown {
    /// Rows of a table: the column names, then one value per column.
    Rows(Vec<Row>),
    /// `ExplainInstance`'s answer.
    Explained(Value),
}

/// One row: (column, value) pairs in column order.
type Row = Vec<(&'static str, Value)>;

impl Shown {
    fn rows(rows: Vec<Row>) -> Self {
        Shown::Rows(rows)
    }

    fn render(&self, output: Output) -> Result<String> {
        let value = match self {
            Shown::Rows(rows) => Value::Array(
                rows.iter()
                    .map(|r| {
                        Value::Object(
                            r.iter()
                                .map(|(k, v)| ((*k).to_string(), v.clone()))
                                .collect(),
                        )
                    })
                    .collect(),
            ),
            Shown::Explained(v) => v.clone(),
        };
        match (output, self) {
            (Output::Json, _) => serde_json::to_string_pretty(&value)
                .map(|s| s + "\n")
                .map_err(|e| InspectError::Render(e.to_string())),
            (Output::Yaml, _) => {
                serde_yaml::to_string(&value).map_err(|e| InspectError::Render(e.to_string()))
            }
            (Output::Table, Shown::Rows(rows)) => Ok(table(rows)),
            (Output::Table, Shown::Explained(v)) => Ok(explanation(v)),
        }
    }
}

/// A value as a table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows as aligned columns under upper-case headers.
fn table(rows: &[Row]) -> String {
    let Some(first) = rows.first() else {
        return "(none)\n".into();
    };
    let headers: Vec<String> = first.iter().map(|(k, _)| k.to_uppercase()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|(_, v)| cell(v)).collect())
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in std::iter::once(&headers).chain(&cells) {
        let last = line.len() - 1;
        for (i, c) in line.iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// `ExplainInstance`'s answer for a person.
fn explanation(v: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| {
        out.push_str(&format!("{k:<10}{v}\n"));
    };
    line(&mut out, "Instance", cell(&v["Instance"]["Id"]));
    line(
        &mut out,
        "Service",
        format!(
            "{} ({}) in {} ({})",
            cell(&v["Service"]["Name"]),
            cell(&v["Service"]["Id"]),
            cell(&v["Namespace"]["Name"]),
            cell(&v["Namespace"]["Id"])
        ),
    );
    let owner = &v["Owner"];
    let owned = match owner["Kind"].as_str() {
        Some("Pod") => format!(
            "pod {} via {} (cluster {})",
            cell(&owner["Pod"]),
            cell(&owner["Object"]),
            cell(&owner["Cluster"])
        ),
        Some("Static") => format!(
            "static endpoint of {} (cluster {})",
            cell(&owner["Object"]),
            cell(&owner["Cluster"])
        ),
        _ => "the Cloud Map API".into(),
    };
    line(&mut out, "Owner", owned);
    let sources: Vec<String> = v["Health"]["Sources"]
        .as_array()
        .map_or(&[][..], |s| s)
        .iter()
        .map(|s| match s["Source"].as_str() {
            Some("Check") => format!(
                "{} check of {} ({})",
                cell(&s["Type"]),
                cell(&s["ResourcePath"]),
                match s["Passing"].as_bool() {
                    Some(true) => "passing",
                    Some(false) => "failing",
                    None => "not probed yet",
                }
            ),
            Some(other) => format!("{} ({})", other.to_lowercase(), cell(&s["Status"])),
            None => cell(s),
        })
        .collect();
    let since = match v["Health"]["Since"].as_f64() {
        Some(t) => jiff::Timestamp::from_millisecond((t * 1000.0) as i64)
            .map(|t| format!(", since {}", t.strftime("%Y-%m-%dT%H:%M:%SZ")))
            .unwrap_or_default(),
        None => String::new(),
    };
    let health = if sources.is_empty() {
        format!("{} (no health check)", cell(&v["Health"]["Status"]))
    } else {
        format!(
            "{} from {}{since}",
            cell(&v["Health"]["Status"]),
            sources.join(" and ")
        )
    };
    line(&mut out, "Health", health);
    line(
        &mut out,
        "Since",
        format!(
            "registered {}, last updated {}",
            cell(&v["CreateDate"]),
            cell(&v["UpdateDate"])
        ),
    );
    if let Some(attrs) = v["Instance"]["Attributes"].as_object() {
        out.push_str("Attributes\n");
        for (k, a) in attrs {
            out.push_str(&format!("  {k}={}\n", cell(a)));
        }
    }
    out.push_str("Why\n");
    for reason in v["Explanation"].as_array().map_or(&[][..], |s| s) {
        out.push_str(&format!("  - {}\n", cell(reason)));
    }
    out
}

/// `ListNamespaces` summaries as rows.
fn namespace_rows(namespaces: &[Value]) -> Vec<Row> {
    namespaces
        .iter()
        .map(|n| {
            vec![
                ("name", n["Name"].clone()),
                ("id", n["Id"].clone()),
                ("type", n["Type"].clone()),
                ("services", n["ServiceCount"].clone()),
            ]
        })
        .collect()
}

/// `ListServices` summaries as rows.
fn service_rows(services: &[Value]) -> Vec<Row> {
    services
        .iter()
        .map(|s| {
            let health = if let Some(check) = s.get("HealthCheckConfig").filter(|c| !c.is_null()) {
                Value::String(
                    format!(
                        "{} {}",
                        cell(&check["Type"]),
                        check["ResourcePath"].as_str().unwrap_or("")
                    )
                    .trim_end()
                    .to_string(),
                )
            } else if s
                .get("HealthCheckCustomConfig")
                .is_some_and(|c| !c.is_null())
            {
                "custom".into()
            } else {
                Value::Null
            };
            vec![
                ("name", s["Name"].clone()),
                ("id", s["Id"].clone()),
                ("instances", s["InstanceCount"].clone()),
                ("health check", health),
            ]
        })
        .collect()
}

/// `DiscoverInstances` answers as rows: the reserved attributes in their
/// own columns, the rest as `key=value`.
fn instance_rows(instances: &[Value]) -> Vec<Row> {
    instances
        .iter()
        .map(|i| {
            let attrs = i["Attributes"].as_object();
            let get = |k: &str| attrs.and_then(|a| a.get(k)).cloned().unwrap_or(Value::Null);
            let address = match get("AWS_INSTANCE_IPV4") {
                Value::Null => get("AWS_INSTANCE_IPV6"),
                v4 => v4,
            };
            let others: Vec<String> = attrs
                .into_iter()
                .flatten()
                .filter(|(k, _)| !k.starts_with("AWS_INSTANCE_"))
                .map(|(k, v)| format!("{k}={}", cell(v)))
                .collect();
            vec![
                ("id", i["InstanceId"].clone()),
                ("address", address),
                ("port", get("AWS_INSTANCE_PORT")),
                ("health", i["HealthStatus"].clone()),
                ("attributes", Value::String(others.join(","))),
            ]
        })
        .collect()
}

/// `key=value` filters as `QueryParameters`.
fn parse_filters(filters: &[String]) -> Result<Map<String, Value>> {
    filters
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Value::String(v.to_string()))),
            _ => Err(InspectError::Usage(format!(
                "--filter {f:?} must be KEY=VALUE"
            ))),
        })
        .collect()
}

fn names(items: &[Value]) -> String {
    let names: Vec<String> = items.iter().map(|i| cell(&i["Name"])).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

async fn list_namespaces(client: &Client) -> Result<Vec<Value>> {
    client
        .paged("ListNamespaces", json!({}), "Namespaces")
        .await
}

async fn list_services(client: &Client, namespace: &Value) -> Result<Vec<Value>> {
    let filter = json!({"Filters": [{"Name": "NAMESPACE_ID", "Values": [namespace["Id"]], "Condition": "EQ"}]});
    client.paged("ListServices", filter, "Services").await
}

async fn find_namespace(client: &Client, name: &str) -> Result<Value> {
    let all = list_namespaces(client).await?;
    all.iter()
        .find(|n| n["Name"] == name)
        .cloned()
        .ok_or_else(|| {
            InspectError::NotFound(format!(
                "no namespace named {name:?} (there are: {})",
                names(&all)
            ))
        })
}

/// A Cloud Map API client for one endpoint.
struct Client {
    endpoint: String,
    host: String,
    port: u16,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    region: String,
    credentials: Option<aws_credential_types::Credentials>,
}

impl Client {
    fn new(args: &InspectArgs) -> Result<Self> {
        let url: hyper::Uri = args.endpoint_url.parse().map_err(|e| {
            InspectError::Usage(format!("--endpoint-url {:?}: {e}", args.endpoint_url))
        })?;
        let https = match url.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(InspectError::Usage(format!(
                    "--endpoint-url {:?} must be http:// or https://",
                    args.endpoint_url
                )));
            }
        };
        let host = url
            .host()
            .ok_or_else(|| {
                InspectError::Usage(format!(
                    "--endpoint-url {:?} has no host",
                    args.endpoint_url
                ))
            })?
            .trim_matches(['[', ']'])
            .to_string();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            Some((connector(args.ca_file.as_deref())?, server_name(&host)?))
        } else {
            None
        };
        // As the AWS CLI reads them; without a key the requests go unsigned
        // (an endpoint started with --auth none).
        let credentials = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(akid), Ok(secret)) if !akid.is_empty() => {
                Some(aws_credential_types::Credentials::new(
                    akid,
                    secret,
                    std::env::var("AWS_SESSION_TOKEN").ok(),
                    None,
                    "environment",
                ))
            }
            _ => None,
        };
        Ok(Self {
            endpoint: args.endpoint_url.trim_end_matches('/').to_string(),
            host,
            port,
            tls,
            region: args.region.clone(),
            credentials,
        })
    }

    fn transport(&self, reason: impl std::fmt::Display) -> InspectError {
        InspectError::Transport {
            endpoint: self.endpoint.clone(),
            reason: reason.to_string(),
        }
    }

    /// Every page of a `List*` call's `member`.
    async fn paged(&self, op: &str, mut body: Value, member: &str) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        loop {
            let out = self.call(op, body.clone()).await?;
            all.extend(out[member].as_array().cloned().unwrap_or_default());
            match out["NextToken"].as_str() {
                Some(token) if !token.is_empty() => body["NextToken"] = token.into(),
                _ => return Ok(all),
            }
        }
    }

    /// One call: a signed (when there are credentials) JSON 1.1 POST.
    async fn call(&self, op: &str, body: Value) -> Result<Value> {
        let body = serde_json::to_vec(&body).map_err(|e| InspectError::Render(e.to_string()))?;
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let target = format!("{}{op}", crate::api::TARGET_PREFIX);
        let mut headers = vec![
            ("host".to_string(), authority.clone()),
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            ("x-amz-target".to_string(), target),
        ];
        if let Some(credentials) = &self.credentials {
            headers.extend(self.sign(credentials, &headers, &body)?);
        }
        let mut request = hyper::Request::post("/");
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.transport(e))?;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.transport(e))?;
        let response = match &self.tls {
            None => send(TokioIo::new(tcp), request).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| self.transport(format!("TLS: {e}")))?;
                send(TokioIo::new(stream), request).await
            }
        }
        .map_err(|e| self.transport(e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport(e))?
            .to_bytes();
        let value: Value = if bytes.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                self.transport(format!("HTTP {status}, not a Cloud Map answer: {e}"))
            })?
        };
        if status.is_success() {
            return Ok(value);
        }
        let kind = value["__type"].as_str().unwrap_or("UnknownError");
        Err(InspectError::Api {
            kind: kind.rsplit('#').next().unwrap_or(kind).to_string(),
            message: value["message"]
                .as_str()
                .or(value["Message"].as_str())
                .unwrap_or("")
                .to_string(),
        })
    }

    /// The SigV4 headers for a request, from the AWS SDK's own signer.
    fn sign(
        &self,
        credentials: &aws_credential_types::Credentials,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let identity = credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("servicediscovery")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| InspectError::Usage(format!("cannot sign: {e}")))?
            .into();
        let url = format!("{}/", self.endpoint);
        let request = SignableRequest::new(
            "POST",
            &url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| InspectError::Usage(format!("cannot sign: {e}")))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| InspectError::Usage(format!("cannot sign: {e}")))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}

async fn send<T>(
    io: TokioIo<T>,
    request: hyper::Request<Full<Bytes>>,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake(io).await?;
    tokio::spawn(connection);
    sender.send_request(request).await
}

/// A TLS client trusting `ca_file`, or the system's roots.
fn connector(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| InspectError::Usage(format!("--ca-file {}: {e}", path.display())))?;
            let mut any = false;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls::pki_types::CertificateDer<'static> = cert.map_err(|e| {
                    InspectError::Usage(format!("--ca-file {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    InspectError::Usage(format!("--ca-file {}: {e}", path.display()))
                })?;
                any = true;
            }
            if !any {
                return Err(InspectError::Usage(format!(
                    "--ca-file {} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>> {
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| InspectError::Usage(format!("{host:?} is not a TLS server name: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_name_empty_results() {
        let rows = namespace_rows(&[
            json!({"Name": "shop.local", "Id": "ns-1", "Type": "DNS_PRIVATE", "ServiceCount": 2}),
            json!({"Name": "a", "Id": "ns-22", "Type": "HTTP", "ServiceCount": 0}),
        ]);
        assert_eq!(
            table(&rows),
            "NAME        ID     TYPE         SERVICES\n\
             shop.local  ns-1   DNS_PRIVATE  2\n\
             a           ns-22  HTTP         0\n"
        );
        assert_eq!(table(&[]), "(none)\n");
    }

    #[test]
    fn instances_show_address_port_health_and_the_other_attributes() {
        let rows = instance_rows(&[json!({
            "InstanceId": "web-1",
            "HealthStatus": "HEALTHY",
            "Attributes": {"AWS_INSTANCE_IPV6": "fd00::1", "AWS_INSTANCE_PORT": "80", "version": "v2", "zone": "a"}
        })]);
        let row: Map<String, Value> = rows[0]
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(row["address"], "fd00::1");
        assert_eq!(row["port"], "80");
        assert_eq!(row["health"], "HEALTHY");
        assert_eq!(row["attributes"], "version=v2,zone=a");
    }

    #[test]
    fn services_show_their_health_check() {
        let rows = service_rows(&[
            json!({"Name": "a", "Id": "srv-1", "InstanceCount": 1, "HealthCheckConfig": {"Type": "HTTP", "ResourcePath": "/healthz"}}),
            json!({"Name": "b", "Id": "srv-2", "InstanceCount": 0, "HealthCheckCustomConfig": {}}),
            json!({"Name": "c", "Id": "srv-3", "InstanceCount": 0}),
        ]);
        let health: Vec<String> = rows.iter().map(|r| cell(&r[3].1)).collect();
        assert_eq!(health, ["HTTP /healthz", "custom", "-"]);
    }

    #[test]
    fn filters_must_be_key_value() {
        let ok = parse_filters(&["version=v2".into(), "empty=".into()]).unwrap();
        assert_eq!(ok["version"], "v2");
        assert_eq!(ok["empty"], "");
        for bad in ["version", "=v2"] {
            let e = parse_filters(&[bad.into()]).unwrap_err();
            assert!(e.to_string().contains("KEY=VALUE"), "{e}");
        }
    }

    #[test]
    fn explanations_read_as_sentences() {
        let text = explanation(&json!({
            "Instance": {"Id": "web-1", "Attributes": {"AWS_INSTANCE_IPV4": "10.0.0.1"}},
            "Service": {"Id": "srv-1", "Name": "web"},
            "Namespace": {"Id": "ns-1", "Name": "shop.local"},
            "Owner": {"Kind": "Pod", "Pod": "shop/web-1", "Object": "ServiceDiscovery shop/web", "Cluster": "c1"},
            "Health": {"Status": "UNHEALTHY", "Since": 1796000000.5, "Sources": [
                {"Source": "Check", "Type": "HTTP", "ResourcePath": "/healthz", "Passing": false},
                {"Source": "Readiness", "Status": "HEALTHY"}
            ]},
            "CreateDate": 1.5, "UpdateDate": 2.5,
            "Explanation": ["pod shop/web-1 is selected by ServiceDiscovery shop/web (cluster c1)"]
        }));
        assert!(
            text.contains("Owner     pod shop/web-1 via ServiceDiscovery shop/web (cluster c1)"),
            "{text}"
        );
        assert!(
            text.contains(
                "Health    UNHEALTHY from HTTP check of /healthz (failing) and readiness (HEALTHY), since 2026-11-30T00:53:20Z"
            ),
            "{text}"
        );
        assert!(text.contains("  - pod shop/web-1 is selected"), "{text}");
    }
}
