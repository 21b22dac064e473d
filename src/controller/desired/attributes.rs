//! The attributes of a pod's instance beyond its addresses: the system
//! attributes Waymark sets, the port spec.port resolves to, and the pod
//! labels copied as attributes within Cloud Map's limits (a label that
//! cannot become one is recorded, never silently dropped).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controller::cluster::{Cluster, PodInfo};
use crate::crd::{ServiceDiscovery, SkippedLabelReason};
use crate::registry::validate::{self, MAX_ATTRIBUTES_TOTAL_LEN};

/// Attribute: the pod's Kubernetes namespace.
pub const K8S_NAMESPACE: &str = "K8S_NAMESPACE";
/// Attribute: the pod's name.
pub const K8S_POD_NAME: &str = "K8S_POD_NAME";
/// Attribute: the node the pod runs on.
pub const K8S_NODE_NAME: &str = "K8S_NODE_NAME";
/// Attribute: the node's `topology.kubernetes.io/zone`.
pub const AVAILABILITY_ZONE: &str = "AVAILABILITY_ZONE";
/// Attribute: the node's `topology.kubernetes.io/region`.
pub const REGION: &str = "REGION";
/// Attribute: the ownership marker, `<cluster id>/<namespace>/<ServiceDiscovery>`.
pub const WAYMARK_MANAGED_BY: &str = "WAYMARK_MANAGED_BY";
/// Attribute: set on a terminating pod's instance while it drains, to the
/// drain deadline in epoch milliseconds. The instance is `UNHEALTHY` for
/// Cloud Map and DNS as before; the xDS server serves it as `DRAINING` (any
/// instance carrying the attribute, API-registered ones too), which health
/// alone cannot tell apart from a failing instance.
pub const WAYMARK_DRAINING: &str = "WAYMARK_DRAINING";

/// Attributes Waymark sets itself; labels and spec attributes cannot override them.
const SYSTEM_ATTRIBUTES: [&str; 7] = [
    K8S_NAMESPACE,
    K8S_POD_NAME,
    K8S_NODE_NAME,
    AVAILABILITY_ZONE,
    REGION,
    WAYMARK_MANAGED_BY,
    WAYMARK_DRAINING,
];

/// Resolves spec.port for one pod: a number, a port of the referenced
/// Service (through its target port), or a named container port.
pub(super) fn resolve_port(
    sd: &ServiceDiscovery,
    cluster: &Cluster,
    pod: &PodInfo,
) -> Result<Option<u16>, String> {
    let Some(port) = &sd.spec.port else {
        return Ok(None);
    };
    let named = |name: &str| {
        pod.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.port)
    };
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .map(Some)
            .map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => {
            if let Some(r) = &sd.spec.service_ref
                && let Some(svc) = cluster
                    .services
                    .get(&(pod.namespace.to_string(), r.name.clone()))
                && let Some(sp) = svc.ports.iter().find(|p| p.name.as_deref() == Some(name))
            {
                return match &sp.target {
                    IntOrString::Int(n) => u16::try_from(*n)
                        .map(Some)
                        .map_err(|_| format!("target port {n} is out of range")),
                    IntOrString::String(target) => named(target).map(Some).ok_or_else(|| {
                        format!("pod has no container port named {target:?} (target of Service port {name:?})")
                    }),
                };
            }
            named(name)
                .map(Some)
                .ok_or_else(|| format!("pod has no container port named {name:?}"))
        }
    }
}

/// The label keys an SD copies, honouring `include: ["*"]` and `exclude`.
fn wanted_labels<'a>(
    sd: &ServiceDiscovery,
    labels: &'a BTreeMap<String, String>,
) -> Vec<(&'a String, &'a String)> {
    let Some(rules) = &sd.spec.label_attributes else {
        return Vec::new();
    };
    let all = rules.include.iter().any(|k| k == "*");
    labels
        .iter()
        .filter(|(k, _)| (all || rules.include.contains(k)) && !rules.exclude.contains(k))
        .collect()
}

/// Copies the chosen labels into `attrs`, recording each label that cannot
/// become an attribute (never silently dropped).
pub(super) fn add_labels(
    sd: &ServiceDiscovery,
    pod: &PodInfo,
    attrs: &mut BTreeMap<String, String>,
    skipped: &mut BTreeMap<(String, SkippedLabelReason), String>,
) {
    let mut custom = attrs
        .keys()
        .filter(|k| !validate::is_reserved_attribute(k))
        .count();
    let mut total: usize = attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    for (k, v) in wanted_labels(sd, &pod.labels) {
        let skip = |reason, message: String| (k.clone(), reason, message);
        let verdict = if validate::is_reserved_attribute(k)
            || k.starts_with("AWS_")
            || SYSTEM_ATTRIBUTES.contains(&k.as_str())
        {
            Err(skip(
                SkippedLabelReason::Reserved,
                format!("{k} is set by Waymark or reserved by Cloud Map"),
            ))
        } else if sd.spec.attributes.contains_key(k) || attrs.contains_key(k) {
            Err(skip(
                SkippedLabelReason::Conflict,
                format!("{k} is already set by spec.attributes"),
            ))
        } else if let Err(e) = validate::attribute_key(k) {
            Err(skip(SkippedLabelReason::InvalidKey, e.to_string()))
        } else if let Err(e) = validate::attribute_value(k, v) {
            Err(skip(
                SkippedLabelReason::InvalidValue,
                format!("pod {}: {e}", pod.name),
            ))
        } else if custom >= validate::MAX_CUSTOM_ATTRIBUTES
            || total + k.len() + v.len() > MAX_ATTRIBUTES_TOTAL_LEN
        {
            Err(skip(
                SkippedLabelReason::TooManyAttributes,
                format!(
                    "an instance holds at most {} custom attributes and {MAX_ATTRIBUTES_TOTAL_LEN} characters",
                    validate::MAX_CUSTOM_ATTRIBUTES
                ),
            ))
        } else {
            Ok(())
        };
        match verdict {
            Ok(()) => {
                custom += 1;
                total += k.len() + v.len();
                attrs.insert(k.clone(), v.clone());
            }
            Err((label, reason, message)) => {
                skipped.entry((label, reason)).or_insert(message);
            }
        }
    }
}
