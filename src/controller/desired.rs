//! Pure desired-state computation: a ServiceDiscovery plus the observed
//! cluster become the registry service and the instances it should have.
//! No I/O here, so every rule is unit-tested without a cluster. How a pod's
//! labels, port and topology become attributes is in `attributes`.

mod attributes;

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use super::cluster::{Cluster, PodInfo, SelectorError};
use crate::crd::{self, HealthCheckType, ServiceDiscovery, SkippedLabel, SkippedLabelReason};
use crate::registry::DesiredInstance;
use crate::registry::model::{
    DnsConfig, DnsRecord, EpochMillis, HealthCheckConfig, HealthCheckType as RegHc, HealthStatus,
    RecordType, RoutingPolicy,
};
use crate::registry::validate::{self, AWS_INSTANCE_IPV4, AWS_INSTANCE_IPV6, AWS_INSTANCE_PORT};

pub use self::attributes::{
    AVAILABILITY_ZONE, K8S_NAMESPACE, K8S_NODE_NAME, K8S_POD_NAME, REGION, WAYMARK_DRAINING,
    WAYMARK_MANAGED_BY,
};
use self::attributes::{add_labels, resolve_port};

/// The registry service an SD asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    /// Registry namespace name (the Waymark Namespace's registry name).
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// DNS settings (DNS namespaces only).
    pub dns_config: Option<DnsConfig>,
    /// Active health check (Http/Https/Tcp).
    pub health_check_config: Option<HealthCheckConfig>,
    /// Whether the service has custom health (readiness-driven or Custom).
    pub custom_health: bool,
    /// The service's WAYMARK_TRAFFIC_SPLIT attribute (spec.trafficSplit), if any.
    pub traffic_split: Option<String>,
}

/// A reason the service is degraded but still synced.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Machine-readable reason (CamelCase), used in conditions and Events.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// Everything the reconciler needs to apply for one SD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The registry service.
    pub service: DesiredService,
    /// Its instances (pods and static ones).
    pub instances: Vec<DesiredInstance>,
    /// Pod labels that could not become attributes.
    pub skipped_labels: Vec<SkippedLabel>,
    /// Reasons for a Degraded condition.
    pub problems: Vec<Problem>,
    /// The next time the plan changes by itself (a draining pod expires).
    pub next_deadline: Option<EpochMillis>,
    /// Pods that declare the `waymark.dev/registered` readiness gate.
    pub gated: Vec<GatedPod>,
    /// What each selected pod contributed, by pod name, so later pod
    /// changes can be applied one pod at a time.
    pub pods: BTreeMap<String, PodState>,
    /// The problems that do not come from pods (they hold until the SD,
    /// its Namespace or its Service changes).
    pub service_problems: Vec<Problem>,
}

/// A pod that declares the `waymark.dev/registered` readiness gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatedPod {
    /// Pod name.
    pub pod: String,
    /// Its instance id.
    pub instance_id: String,
    /// The gate condition's current status, if set.
    pub current: Option<bool>,
}

/// Why no plan can be made (the SD is not Synced).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// spec.namespaceRef names no Waymark Namespace.
    #[error("Waymark Namespace {0:?} does not exist")]
    NamespaceNotFound(String),
    /// spec.serviceRef names no Kubernetes Service.
    #[error("Service {0:?} does not exist in this namespace")]
    ServiceNotFound(String),
    /// spec.selector cannot be evaluated.
    #[error("invalid selector: {0}")]
    InvalidSelector(String),
}

impl PlanError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NamespaceNotFound(_) => "NamespaceNotFound",
            Self::ServiceNotFound(_) => "ServiceNotFound",
            Self::InvalidSelector(_) => "InvalidSelector",
        }
    }
}

/// A stable instance id for a pod: its name, or — when longer than Cloud Map
/// allows — a prefix plus a hash of the full name.
pub fn instance_id_for(pod_name: &str) -> String {
    if pod_name.len() <= validate::MAX_INSTANCE_ID_LEN {
        return pod_name.to_string();
    }
    // FNV-1a: stable across Rust versions and processes, unlike the std hasher.
    let hash = pod_name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = validate::MAX_INSTANCE_ID_LEN - 17;
    format!(
        "{}-{hash:016x}",
        pod_name[..keep].trim_end_matches(['-', '.'])
    )
}

/// The owner string recorded on registry resources an SD manages.
pub fn owner_object(sd: &ServiceDiscovery) -> String {
    format!(
        "ServiceDiscovery {}/{}",
        sd.namespace().unwrap_or_default(),
        sd.name_any()
    )
}

fn record_type(t: crd::RecordType) -> RecordType {
    match t {
        crd::RecordType::A => RecordType::A,
        crd::RecordType::Aaaa => RecordType::Aaaa,
        crd::RecordType::Srv => RecordType::Srv,
        crd::RecordType::Cname => RecordType::Cname,
    }
}

/// Computes the plan for one SD.
pub fn plan(
    sd: &ServiceDiscovery,
    cluster: &Cluster,
    cluster_id: &str,
    now: EpochMillis,
) -> Result<Plan, PlanError> {
    let ns_name = &sd.spec.namespace_ref.name;
    let wns = cluster
        .namespaces
        .get(ns_name)
        .ok_or_else(|| PlanError::NamespaceNotFound(ns_name.clone()))?;
    let selector = cluster.selector_of(sd).map_err(|e| match e {
        SelectorError::ServiceNotFound(n) => PlanError::ServiceNotFound(n),
        SelectorError::Invalid(m) => PlanError::InvalidSelector(m),
    })?;
    let mut problems = Vec::new();

    let dns_config = match (&sd.spec.dns, wns.spec.type_.is_dns()) {
        (Some(dns), true) => Some(DnsConfig {
            routing_policy: match dns.routing_policy {
                crd::RoutingPolicy::Multivalue => RoutingPolicy::Multivalue,
                crd::RoutingPolicy::Weighted => RoutingPolicy::Weighted,
            },
            records: dns
                .records
                .iter()
                .map(|r| DnsRecord {
                    kind: record_type(r.type_),
                    ttl: i64::from(r.ttl),
                })
                .collect(),
        }),
        (Some(_), false) => {
            problems.push(Problem {
                reason: "DnsIgnored",
                message: format!(
                    "spec.dns is ignored: Namespace {ns_name} is an Http namespace (API discovery only)"
                ),
            });
            None
        }
        (None, _) => None,
    };
    let selects_pods = sd.spec.selector.is_some() || sd.spec.service_ref.is_some();
    let hc_type = sd.spec.health_check.as_ref().map(|h| h.type_);
    let health_check_config = sd
        .spec
        .health_check
        .as_ref()
        .filter(|h| h.type_.is_probe())
        .map(|h| HealthCheckConfig {
            kind: match h.type_ {
                HealthCheckType::Https => RegHc::Https,
                HealthCheckType::Tcp => RegHc::Tcp,
                _ => RegHc::Http,
            },
            resource_path: matches!(h.type_, HealthCheckType::Http | HealthCheckType::Https)
                .then(|| h.effective_path().to_string()),
            failure_threshold: Some(h.effective_failure_threshold() as i32),
            interval_seconds: Some(h.effective_interval_seconds()),
            timeout_seconds: Some(h.effective_timeout_seconds()),
        });
    let custom_health = match hc_type {
        Some(HealthCheckType::Readiness | HealthCheckType::Custom) => true,
        Some(_) => false,
        // Readiness is the default for pods; static-only services have no check.
        None => selects_pods,
    };
    let service = DesiredService {
        namespace: wns.registry_name().to_string(),
        name: sd.service_name().to_string(),
        description: sd.spec.description.clone(),
        dns_config,
        health_check_config,
        custom_health,
        traffic_split: sd
            .spec
            .traffic_split
            .as_ref()
            .map(crd::TrafficSplit::attribute_value),
    };

    let ctx = PodContext::new(sd, cluster, cluster_id);
    let ns = sd.namespace().unwrap_or_default();
    let mut pods = BTreeMap::new();
    let mut instances = Vec::new();
    if let Some(all) = cluster.pods.get(&ns) {
        for pod in all.values().filter(|p| selector.matches(&p.labels)) {
            let plan = ctx.plan_pod(pod, now);
            pods.insert(pod.name.clone(), plan.state());
            if let PodPlan::Instance { instance, .. } = plan {
                instances.push(instance);
            }
        }
    }
    for st in &sd.spec.instances {
        let mut attrs = sd.spec.attributes.clone();
        attrs.extend(st.attributes.clone());
        attrs.insert(WAYMARK_MANAGED_BY.into(), ctx.owner_marker.clone());
        instances.push(DesiredInstance {
            id: st.id.clone(),
            attributes: attrs.into(),
            // Custom health leaves static instances to API reports too.
            health: (!ctx.api_reports_health).then_some(HealthStatus::Healthy),
        });
    }
    let summary = summarize(pods.values());
    let service_problems = problems.clone();
    problems.extend(summary.problems);
    let gated = pods
        .values()
        .filter_map(|p| match p {
            PodState::Instance { gate: Some(g), .. } => Some(GatedPod::clone(g)),
            _ => None,
        })
        .collect();
    Ok(Plan {
        service,
        instances,
        skipped_labels: summary.skipped_labels,
        problems,
        next_deadline: summary.next_deadline,
        gated,
        pods,
        service_problems,
    })
}

/// What one pod contributes to its ServiceDiscovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodPlan {
    /// Not registered: finished, without an IP yet, or drained.
    Skip,
    /// Not registered because spec.port cannot be resolved for it.
    PortProblem(String),
    /// Registered.
    Instance {
        /// The instance.
        instance: DesiredInstance,
        /// Labels that could not become attributes: (label, reason) → message.
        skipped: Vec<((String, SkippedLabelReason), String)>,
        /// The readiness gate, when the pod declares it.
        gate: Option<Box<GatedPod>>,
        /// When a draining pod is to be deregistered.
        deadline: Option<EpochMillis>,
    },
}

impl PodPlan {
    /// What is kept of the plan between passes: the instance reduced to its
    /// id and a digest, which is all a later pass needs to tell whether the
    /// pod's instance changed (and far smaller than its attributes).
    pub fn state(&self) -> PodState {
        match self {
            Self::Skip => PodState::Skip,
            Self::PortProblem(m) => PodState::PortProblem(m.clone()),
            Self::Instance {
                instance,
                skipped,
                gate,
                deadline,
            } => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                instance.attributes.hash(&mut h);
                instance.health.hash(&mut h);
                PodState::Instance {
                    id: instance.id.clone(),
                    digest: h.finish(),
                    skipped: skipped.clone(),
                    gate: gate.clone(),
                    deadline: *deadline,
                }
            }
        }
    }
}

/// What a pod contributed to its SD at the last pass (see [`PodPlan::state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Not registered.
    Skip,
    /// Not registered because spec.port cannot be resolved for it.
    PortProblem(String),
    /// Registered.
    Instance {
        /// Instance id.
        id: String,
        /// Digest of the instance's attributes and health.
        digest: u64,
        /// Labels that could not become attributes: (label, reason) → message.
        skipped: Vec<((String, SkippedLabelReason), String)>,
        /// The readiness gate, when the pod declares it.
        gate: Option<Box<GatedPod>>,
        /// When a draining pod is to be deregistered.
        deadline: Option<EpochMillis>,
    },
}

/// Everything a pod's plan depends on besides the pod itself, computed once
/// per ServiceDiscovery.
pub struct PodContext<'a> {
    sd: &'a ServiceDiscovery,
    cluster: &'a Cluster,
    owner_marker: String,
    drain_ms: i64,
    // `Custom` health: the Cloud Map API reports health, not readiness.
    api_reports_health: bool,
}

impl<'a> PodContext<'a> {
    /// The context for the pods of `sd`.
    pub fn new(sd: &'a ServiceDiscovery, cluster: &'a Cluster, cluster_id: &str) -> Self {
        Self {
            sd,
            cluster,
            owner_marker: format!(
                "{cluster_id}/{}/{}",
                sd.namespace().unwrap_or_default(),
                sd.name_any()
            ),
            drain_ms: i64::from(sd.spec.drain_seconds) * 1000,
            api_reports_health: sd
                .spec
                .health_check
                .as_ref()
                .is_some_and(|h| h.type_ == HealthCheckType::Custom),
        }
    }

    /// Plans one pod the SD selects.
    pub fn plan_pod(&self, pod: &PodInfo, now: EpochMillis) -> PodPlan {
        let (sd, cluster) = (self.sd, self.cluster);
        if pod.finished || (pod.ipv4.is_none() && pod.ipv6.is_none()) {
            return PodPlan::Skip;
        }
        let mut deadline = None;
        let health = match pod.deletion_requested {
            Some(at) if now >= at + self.drain_ms => return PodPlan::Skip,
            Some(at) => {
                deadline = Some(at + self.drain_ms);
                HealthStatus::Unhealthy
            }
            // A pod with the registration gate cannot be Ready before it is
            // registered; its containers' readiness is what counts.
            None if pod.has_registered_gate && pod.containers_ready => HealthStatus::Healthy,
            None if !pod.has_registered_gate && pod.ready => HealthStatus::Healthy,
            None => HealthStatus::Unhealthy,
        };
        // A terminating pod is unhealthy whatever was reported; otherwise
        // `Custom` health is left to UpdateInstanceCustomHealthStatus.
        let health = (deadline.is_some() || !self.api_reports_health).then_some(health);
        let port = match resolve_port(sd, cluster, pod) {
            Ok(p) => p,
            Err(e) => return PodPlan::PortProblem(format!("{}: {e}", pod.name)),
        };
        // Built as a BTreeMap and packed once at the end.
        let mut attrs = BTreeMap::new();
        if let Some(ip) = &pod.ipv4 {
            attrs.insert(AWS_INSTANCE_IPV4.into(), ip.to_string());
        }
        if let Some(ip) = &pod.ipv6 {
            attrs.insert(AWS_INSTANCE_IPV6.into(), ip.to_string());
        }
        if let Some(p) = port {
            attrs.insert(AWS_INSTANCE_PORT.into(), p.to_string());
        }
        attrs.insert(K8S_NAMESPACE.into(), pod.namespace.to_string());
        attrs.insert(K8S_POD_NAME.into(), pod.name.clone());
        if let Some(node) = &pod.node {
            attrs.insert(K8S_NODE_NAME.into(), node.to_string());
            if let Some(info) = cluster.nodes.get(&**node) {
                if let Some(z) = &info.zone {
                    attrs.insert(AVAILABILITY_ZONE.into(), z.clone());
                }
                if let Some(r) = &info.region {
                    attrs.insert(REGION.into(), r.clone());
                }
            }
        }
        attrs.insert(WAYMARK_MANAGED_BY.into(), self.owner_marker.clone());
        // Constant while the pod drains (the deadline is fixed at deletion),
        // so marking it is one registry write.
        if let Some(deadline) = deadline {
            attrs.insert(WAYMARK_DRAINING.into(), deadline.to_string());
        }
        for (k, v) in &sd.spec.attributes {
            if !attrs.contains_key(k) {
                attrs.insert(k.clone(), v.clone());
            }
        }
        let mut skipped = BTreeMap::new();
        add_labels(sd, pod, &mut attrs, &mut skipped);
        let id = instance_id_for(&pod.name);
        PodPlan::Instance {
            gate: pod.has_registered_gate.then(|| {
                Box::new(GatedPod {
                    pod: pod.name.clone(),
                    instance_id: id.clone(),
                    current: pod.registered_condition,
                })
            }),
            instance: DesiredInstance {
                id,
                attributes: attrs.into(),
                health,
            },
            skipped: skipped.into_iter().collect(),
            deadline,
        }
    }
}

/// What the pods of an SD add up to for its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSummary {
    /// PortNotFound and LabelsSkipped problems.
    pub problems: Vec<Problem>,
    /// Labels that could not become attributes.
    pub skipped_labels: Vec<SkippedLabel>,
    /// The earliest drain deadline.
    pub next_deadline: Option<EpochMillis>,
}

/// Adds up the per-pod plans of an SD.
pub fn summarize<'a>(pods: impl Iterator<Item = &'a PodState>) -> PodSummary {
    let mut port_problems = BTreeSet::new();
    let mut skipped: BTreeMap<(String, SkippedLabelReason), String> = BTreeMap::new();
    let mut next_deadline: Option<EpochMillis> = None;
    for p in pods {
        match p {
            PodState::Skip => {}
            PodState::PortProblem(m) => {
                port_problems.insert(m.as_str());
            }
            PodState::Instance {
                skipped: s,
                deadline,
                ..
            } => {
                for (k, m) in s {
                    skipped.entry(k.clone()).or_insert_with(|| m.clone());
                }
                if let Some(end) = deadline {
                    next_deadline = Some(next_deadline.map_or(*end, |d| d.min(*end)));
                }
            }
        }
    }
    let mut problems = Vec::new();
    if !port_problems.is_empty() {
        let n = port_problems.len();
        let sample: Vec<_> = port_problems.into_iter().take(3).collect();
        problems.push(Problem {
            reason: "PortNotFound",
            message: format!(
                "{n} pod(s) not registered because spec.port cannot be resolved: {}",
                sample.join("; ")
            ),
        });
    }
    let skipped_labels: Vec<SkippedLabel> = skipped
        .into_iter()
        .map(|((label, reason), message)| SkippedLabel {
            label,
            reason,
            message: Some(message),
        })
        .collect();
    if !skipped_labels.is_empty() {
        problems.push(Problem {
            reason: "LabelsSkipped",
            message: format!(
                "{} label(s) could not become attributes: {}",
                skipped_labels.len(),
                skipped_labels
                    .iter()
                    .map(|s| s.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    PodSummary {
        problems,
        skipped_labels,
        next_deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cluster::ContainerPort;
    use crate::crd::{Namespace as Wns, NamespaceSpec, NamespaceType, ServiceDiscoverySpec};

    fn sd(spec_yaml: &str) -> ServiceDiscovery {
        let spec: ServiceDiscoverySpec = serde_yaml::from_str(spec_yaml).unwrap();
        let mut sd = ServiceDiscovery::new("web", spec);
        sd.metadata.namespace = Some("shop".into());
        sd
    }

    fn cluster(ns_type: NamespaceType, pods: Vec<PodInfo>) -> Cluster {
        let mut c = Cluster::default();
        c.namespaces.insert(
            "q.local".into(),
            Wns::new(
                "q.local",
                NamespaceSpec {
                    name: None,
                    type_: ns_type,
                    description: None,
                    soa_ttl: None,
                },
            ),
        );
        for p in pods {
            c.pods
                .entry(p.namespace.to_string())
                .or_default()
                .insert(p.name.clone(), p);
        }
        c
    }

    fn pod(name: &str, labels: &[(&str, &str)], ready: bool) -> PodInfo {
        PodInfo {
            namespace: "shop".into(),
            name: name.into(),
            labels: std::sync::Arc::new(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ipv4: Some(std::net::Ipv4Addr::new(10, 0, 0, 1)),
            ipv6: None,
            ready,
            finished: false,
            node: None,
            ports: std::sync::Arc::new([ContainerPort {
                name: Some("http".into()),
                port: 8080,
            }]),
            deletion_requested: None,
            containers_ready: ready,
            has_registered_gate: false,
            registered_condition: None,
        }
    }

    #[test]
    fn long_pod_names_get_stable_hashed_ids() {
        assert_eq!(instance_id_for("web-1"), "web-1");
        let long = format!("{}-7d9f8c6b5-abcde", "a".repeat(60));
        let id = instance_id_for(&long);
        assert!(id.len() <= 64, "{id}");
        assert_eq!(id, instance_id_for(&long), "stable");
        assert_ne!(id, instance_id_for(&format!("{long}x")));
        assert!(validate::instance_id(&id).is_ok());
    }

    #[test]
    fn plan_maps_pods_labels_and_health() {
        let sd = sd(
            "namespaceRef: {name: q.local}\nselector: {matchLabels: {app: web}}\nport: http\nlabelAttributes: {include: ['*'], exclude: [pod-template-hash]}\nattributes: {environment: prod}\n",
        );
        let c = cluster(
            NamespaceType::Http,
            vec![
                pod(
                    "a",
                    &[
                        ("app", "web"),
                        ("pod-template-hash", "x"),
                        ("AWS_INSTANCE_IPV4", "1.2.3.4"),
                        ("environment", "dev"),
                    ],
                    true,
                ),
                pod("b", &[("app", "web")], false),
                pod("c", &[("app", "db")], true),
            ],
        );
        let plan = plan(&sd, &c, "c1", 0).unwrap();
        assert!(
            plan.service.custom_health,
            "readiness drives health by default"
        );
        let ids: Vec<(&str, HealthStatus)> = plan
            .instances
            .iter()
            .map(|i| (i.id.as_str(), i.health.unwrap()))
            .collect();
        assert_eq!(
            ids,
            [("a", HealthStatus::Healthy), ("b", HealthStatus::Unhealthy)]
        );
        let a = &plan.instances[0].attributes;
        assert_eq!(
            &a[AWS_INSTANCE_IPV4], "10.0.0.1",
            "a label never overrides a reserved attribute"
        );
        assert_eq!(&a[AWS_INSTANCE_PORT], "8080");
        assert_eq!(&a["environment"], "prod", "spec attributes win over labels");
        assert!(!a.contains_key("pod-template-hash"));
        let skipped: Vec<(&str, SkippedLabelReason)> = plan
            .skipped_labels
            .iter()
            .map(|s| (s.label.as_str(), s.reason))
            .collect();
        assert_eq!(
            skipped,
            [
                ("AWS_INSTANCE_IPV4", SkippedLabelReason::Reserved),
                ("environment", SkippedLabelReason::Conflict)
            ]
        );
        assert!(plan.problems.iter().any(|p| p.reason == "LabelsSkipped"));
    }

    #[test]
    fn terminating_pods_drain_until_their_deadline() {
        let sd = sd(
            "namespaceRef: {name: q.local}\nselector: {matchLabels: {app: web}}\ndrainSeconds: 30\n",
        );
        let mut p = pod("a", &[("app", "web")], true);
        p.deletion_requested = Some(1_000_000);
        let c = cluster(NamespaceType::Http, vec![p]);
        let during = plan(&sd, &c, "c1", 1_010_000).unwrap();
        assert_eq!(during.instances[0].health, Some(HealthStatus::Unhealthy));
        assert_eq!(during.next_deadline, Some(1_030_000));
        // Marked as draining (xDS serves it as DRAINING), with its deadline.
        assert_eq!(
            during.instances[0].attributes.get(WAYMARK_DRAINING),
            Some("1030000")
        );
        let after = plan(&sd, &c, "c1", 1_030_000).unwrap();
        assert!(after.instances.is_empty());
    }

    #[test]
    fn dns_is_ignored_in_http_namespaces_and_ports_must_resolve() {
        let sd = sd(
            "namespaceRef: {name: q.local}\nselector: {matchLabels: {app: web}}\nport: grpc\ndns: {records: [{type: A, ttl: 5}]}\n",
        );
        let c = cluster(NamespaceType::Http, vec![pod("a", &[("app", "web")], true)]);
        let plan = plan(&sd, &c, "c1", 0).unwrap();
        assert!(plan.service.dns_config.is_none());
        let reasons: Vec<&str> = plan.problems.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, ["DnsIgnored", "PortNotFound"]);
        assert!(plan.instances.is_empty());
    }

    #[test]
    fn missing_references_are_plan_errors() {
        let c = cluster(NamespaceType::Http, vec![]);
        let e = plan(&sd("namespaceRef: {name: nope}\n"), &c, "c1", 0).unwrap_err();
        assert_eq!(e.reason(), "NamespaceNotFound");
        let e = plan(
            &sd("namespaceRef: {name: q.local}\nserviceRef: {name: api}\n"),
            &c,
            "c1",
            0,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "ServiceNotFound");
    }
}
