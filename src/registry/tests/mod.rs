//! Registry semantics, against the in-memory store and the redb store.

mod api;
mod controller;
mod store;

use super::model::*;
use super::validate::*;
use super::*;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A registry on the redb store in `data` (opened anew each call).
fn open_redb(data: &std::path::Path) -> Registry {
    Registry::open(
        Box::new(RedbStore::open(data).unwrap()),
        RegistryConfig::default(),
    )
    .unwrap()
}

fn controller(object: &str) -> Owner {
    Owner::Controller {
        cluster: "c1".into(),
        object: object.into(),
    }
}

pub(in crate::registry) fn create_ns(reg: &Registry, name: &str, kind: NamespaceType) -> String {
    let op = reg
        .create_namespace(CreateNamespace {
            name: name.into(),
            kind,
            description: None,
            soa_ttl: None,
            vpc: None,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .unwrap();
    op.targets[&TargetType::Namespace].clone()
}

pub(in crate::registry) fn create_svc(
    reg: &Registry,
    ns: &str,
    name: &str,
    dns: Option<DnsConfig>,
    custom: bool,
) -> Service {
    reg.create_service(CreateService {
        name: name.into(),
        namespace_id: ns.into(),
        description: None,
        dns_config: dns,
        health_check_config: None,
        health_check_custom_config: custom.then_some(HealthCheckCustomConfig {
            failure_threshold: None,
        }),
        http_only: false,
        creator_request_id: None,
        tags: vec![],
        owner: Owner::Api,
    })
    .unwrap()
}

fn register(
    reg: &Registry,
    svc: &str,
    id: &str,
    a: &[(&str, &str)],
    owner: Owner,
) -> Result<WriteOutcome> {
    reg.register_instance(RegisterInstance {
        service_id: svc.into(),
        instance_id: id.into(),
        attributes: attrs(a),
        creator_request_id: None,
        owner,
    })
}

pub(in crate::registry) fn a_records() -> Option<DnsConfig> {
    Some(DnsConfig {
        routing_policy: RoutingPolicy::Multivalue,
        records: vec![DnsRecord {
            kind: RecordType::A,
            ttl: 10,
        }],
    })
}
