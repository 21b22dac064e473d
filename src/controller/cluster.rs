//! What the controller knows about the cluster: slim copies of the pods,
//! Services and Nodes it watches, and the Waymark custom resources.
//!
//! Only the fields the controller uses are kept (labels, IPs, readiness,
//! ports, topology), so memory stays small with many pods. Everything here
//! is pure: watch events are applied by the controller loop, and the
//! desired-state functions read from it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::crd::{Namespace as WaymarkNamespace, ServiceDiscovery};
use crate::registry::model::EpochMillis;

use super::intern::Pool;

/// `namespace/name` of a namespaced object.
pub type Key = (String, String);

/// The readiness gate a pod declares to be held until it is discoverable.
pub const REGISTERED_GATE: &str = "waymark.dev/registered";

/// Labels of a Kubernetes object.
pub type Labels = BTreeMap<String, String>;

/// The pools of the values pods share.
#[derive(Debug, Default)]
pub struct Interner {
    /// Namespace and node names.
    pub names: Pool<str>,
    /// Label sets.
    pub labels: Pool<Labels>,
    /// Container port lists.
    pub ports: Pool<[ContainerPort]>,
}

impl Interner {
    /// The shared copy of a name.
    pub fn name(&mut self, name: &str) -> Arc<str> {
        self.names.get(name)
    }

    /// The shared copy of a label set.
    pub fn labels(&mut self, labels: Labels) -> Arc<Labels> {
        self.labels.take(labels)
    }

    /// The shared copy of a port list.
    pub fn ports(&mut self, ports: &[ContainerPort]) -> Arc<[ContainerPort]> {
        self.ports.get(ports)
    }
}

/// A container port of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerPort {
    /// Port name, if any.
    pub name: Option<String>,
    /// Port number.
    pub port: u16,
}

/// The parts of a Pod the controller uses, kept for every pod it watches.
/// Namespace, node, labels and ports are shared with the other pods that
/// have the same ones (see [`Interner`]); addresses are kept parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Kubernetes namespace.
    pub namespace: Arc<str>,
    /// Pod name.
    pub name: String,
    /// Labels.
    pub labels: Arc<Labels>,
    /// First IPv4 address from `status.podIPs` (or `podIP`).
    pub ipv4: Option<Ipv4Addr>,
    /// First IPv6 address from `status.podIPs` (or `podIP`).
    pub ipv6: Option<Ipv6Addr>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// The `ContainersReady` condition is `True` (readiness without gates).
    pub containers_ready: bool,
    /// `Succeeded` or `Failed`: the pod will never serve again.
    pub finished: bool,
    /// Node the pod is scheduled to.
    pub node: Option<Arc<str>>,
    /// Container ports of all containers.
    pub ports: Arc<[ContainerPort]>,
    /// When deletion was requested (`deletionTimestamp` minus the grace period).
    pub deletion_requested: Option<EpochMillis>,
    /// Whether the pod declares the `waymark.dev/registered` readiness gate.
    pub has_registered_gate: bool,
    /// Status of the `waymark.dev/registered` condition, if present.
    pub registered_condition: Option<bool>,
}

fn time_millis(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> EpochMillis {
    t.0.as_millisecond()
}

impl PodInfo {
    /// Extracts what the controller needs from a Pod, sharing repeated
    /// values through `interner`.
    pub fn from_pod(pod: &Pod, interner: &mut Interner) -> Self {
        let status = pod.status.as_ref();
        let mut ipv4 = None;
        let mut ipv6 = None;
        let listed = status
            .and_then(|s| s.pod_ips.as_deref())
            .filter(|ips| !ips.is_empty());
        let ips: Vec<&str> = match listed {
            Some(ips) => ips.iter().map(|i| i.ip.as_str()).collect(),
            None => status
                .and_then(|s| s.pod_ip.as_deref())
                .into_iter()
                .collect(),
        };
        for ip in ips {
            match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) if ipv4.is_none() => ipv4 = Some(v4),
                Ok(IpAddr::V6(v6)) if ipv6.is_none() => ipv6 = Some(v6),
                _ => {}
            }
        }
        let condition = |t: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == t))
                .map(|c| c.status == "True")
        };
        let spec = pod.spec.as_ref();
        let ports: Vec<ContainerPort> = spec
            .map(|s| {
                s.containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .filter_map(|p| {
                        Some(ContainerPort {
                            name: p.name.clone(),
                            port: u16::try_from(p.container_port).ok()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let meta = &pod.metadata;
        let deletion_requested = meta
            .deletion_timestamp
            .as_ref()
            .map(|t| time_millis(t) - meta.deletion_grace_period_seconds.unwrap_or(0) * 1000);
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
        Self {
            namespace: interner.name(meta.namespace.as_deref().unwrap_or_default()),
            name: pod.name_any(),
            labels: interner.labels(meta.labels.clone().unwrap_or_default()),
            ipv4,
            ipv6,
            ready: condition("Ready").unwrap_or(false),
            containers_ready: condition("ContainersReady").unwrap_or(false),
            finished: matches!(phase, "Succeeded" | "Failed"),
            node: spec
                .and_then(|s| s.node_name.as_deref())
                .map(|n| interner.name(n)),
            ports: interner.ports(&ports),
            deletion_requested,
            has_registered_gate: spec
                .and_then(|s| s.readiness_gates.as_ref())
                .is_some_and(|g| g.iter().any(|g| g.condition_type == REGISTERED_GATE)),
            registered_condition: condition(REGISTERED_GATE),
        }
    }
}

/// A port of a Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name.
    pub name: Option<String>,
    /// Service port number.
    pub port: u16,
    /// Target port on the pods (number or container-port name); defaults to `port`.
    pub target: IntOrString,
}

/// Annotation asking Waymark to register a Service in a registry namespace.
pub const ANNOTATION_NAMESPACE: &str = "waymark.dev/namespace";
/// Annotation overriding the registry service name (default: the Service name).
pub const ANNOTATION_SERVICE_NAME: &str = "waymark.dev/service-name";
/// Annotation choosing the port (name or number; default: the first port).
pub const ANNOTATION_PORT: &str = "waymark.dev/port";

/// The parts of a Kubernetes Service the controller uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// UID, for the ownerReference of an automatically created ServiceDiscovery.
    pub uid: String,
    /// Labels (copied to an automatically created ServiceDiscovery).
    pub labels: BTreeMap<String, String>,
    /// The `waymark.dev/*` annotations.
    pub annotations: BTreeMap<String, String>,
    /// Pod selector (`None`: the Service selects no pods by label).
    pub selector: Option<BTreeMap<String, String>>,
    /// Ports.
    pub ports: Vec<ServicePort>,
}

impl ServiceInfo {
    /// Extracts what the controller needs from a Service.
    pub fn from_service(svc: &Service) -> Self {
        let spec = svc.spec.as_ref();
        Self {
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            labels: svc.metadata.labels.clone().unwrap_or_default(),
            annotations: svc
                .metadata
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("waymark.dev/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            selector: spec
                .and_then(|s| s.selector.clone())
                .filter(|s| !s.is_empty()),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .map(|ports| {
                    ports
                        .iter()
                        .filter_map(|p| {
                            let port = u16::try_from(p.port).ok()?;
                            Some(ServicePort {
                                name: p.name.clone(),
                                port,
                                target: p
                                    .target_port
                                    .clone()
                                    .unwrap_or(IntOrString::Int(i32::from(port))),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Topology labels of a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// `topology.kubernetes.io/region`.
    pub region: Option<String>,
}

impl NodeInfo {
    /// Extracts the topology labels of a Node.
    pub fn from_node(node: &Node) -> Self {
        let labels = node.metadata.labels.as_ref();
        let get = |k: &str| labels.and_then(|l| l.get(k)).cloned();
        Self {
            zone: get("topology.kubernetes.io/zone"),
            region: get("topology.kubernetes.io/region"),
        }
    }
}

/// The cluster state the controller has observed.
#[derive(Debug, Default)]
pub struct Cluster {
    /// Pods by namespace, then name.
    pub pods: HashMap<String, BTreeMap<String, PodInfo>>,
    /// Services by namespace/name.
    pub services: HashMap<Key, ServiceInfo>,
    /// Nodes by name.
    pub nodes: HashMap<String, NodeInfo>,
    /// ServiceDiscovery objects by namespace/name.
    pub discoveries: BTreeMap<Key, ServiceDiscovery>,
    /// Waymark Namespace objects by name.
    pub namespaces: BTreeMap<String, WaymarkNamespace>,
}

/// The label selector an SD uses, resolved through its serviceRef.
pub enum PodSelector {
    /// Selects pods whose labels match.
    Labels(Selector),
    /// Selects no pods (static instances only, or the Service has no selector).
    Nothing,
}

impl PodSelector {
    /// Whether a pod with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Labels(s) => s.matches(labels),
            Self::Nothing => false,
        }
    }
}

/// Why an SD's pod selector could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorError {
    /// spec.serviceRef names a Service that does not exist.
    ServiceNotFound(String),
    /// spec.selector is malformed (e.g. an unknown operator).
    Invalid(String),
}

impl Cluster {
    /// The pod selector of an SD.
    pub fn selector_of(&self, sd: &ServiceDiscovery) -> Result<PodSelector, SelectorError> {
        let ns = sd.namespace().unwrap_or_default();
        if let Some(sel) = &sd.spec.selector {
            return Selector::try_from(sel.clone())
                .map(PodSelector::Labels)
                .map_err(|e| SelectorError::Invalid(e.to_string()));
        }
        if let Some(r) = &sd.spec.service_ref {
            let svc = self
                .services
                .get(&(ns, r.name.clone()))
                .ok_or_else(|| SelectorError::ServiceNotFound(r.name.clone()))?;
            return Ok(match &svc.selector {
                Some(labels) => PodSelector::Labels(Selector::from_iter(labels.clone())),
                None => PodSelector::Nothing,
            });
        }
        Ok(PodSelector::Nothing)
    }

    /// The SDs in `namespace` that select a pod with these labels.
    pub fn discoveries_selecting<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = Key> + 'a {
        self.discoveries
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .filter(move |(_, sd)| {
                self.selector_of(sd)
                    .map(|s| s.matches(labels))
                    .unwrap_or(false)
            })
            .map(|(k, _)| k.clone())
    }

    /// The SDs in `namespace` that reference the Service `name`.
    pub fn discoveries_referencing<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = Key> + 'a {
        self.discoveries
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .filter(move |(_, sd)| sd.spec.service_ref.as_ref().is_some_and(|r| r.name == name))
            .map(|(k, _)| k.clone())
    }

    /// The SDs that reference a Waymark namespace.
    pub fn discoveries_in_namespace<'a>(
        &'a self,
        registry_ns: &'a str,
    ) -> impl Iterator<Item = &'a ServiceDiscovery> + 'a {
        self.discoveries
            .values()
            .filter(move |sd| sd.spec.namespace_ref.name == registry_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodIP, PodStatus};

    fn pod(ips: &[&str], ready: bool) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                pod_ip: ips.first().map(|s| s.to_string()),
                pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn equal_values_share_one_copy() {
        let mut i = Interner::default();
        let a = i.name("node-1");
        let b = i.name(&String::from("node-1"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &i.name("node-2")));
        let l1 = i.labels([("app".into(), "web".into())].into());
        let l2 = i.labels([("app".into(), "web".into())].into());
        assert!(Arc::ptr_eq(&l1, &l2));
        let p = [ContainerPort {
            name: Some("http".into()),
            port: 80,
        }];
        assert!(Arc::ptr_eq(&i.ports(&p), &i.ports(&p.clone())));
    }

    #[test]
    fn dual_stack_pods_get_both_addresses() {
        let mut interner = Interner::default();
        let info = PodInfo::from_pod(&pod(&["fd00::5", "10.0.0.5"], true), &mut interner);
        assert_eq!(info.ipv4, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(info.ipv6, "fd00::5".parse().ok());
        assert!(info.ready);
        let other = PodInfo::from_pod(&pod(&["10.0.0.6"], true), &mut interner);
        assert!(
            Arc::ptr_eq(&info.labels, &other.labels),
            "equal labels are shared"
        );
        assert!(Arc::ptr_eq(&info.namespace, &other.namespace));
        let info = PodInfo::from_pod(&pod(&[], false), &mut interner);
        assert_eq!((info.ipv4, info.ipv6, info.ready), (None, None, false));
    }
}
