use std::collections::HashMap;

use envoy_types::pb::google::rpc::Status as RpcStatus;

use super::*;
use crate::registry::Registry;
use crate::registry::model::{HealthStatus, Owner};
use crate::xds::snapshot::Builder;
use crate::xds::snapshot::tests::{register, registry_with_service};

fn subscribe(kind: ResourceType, names: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: kind.url().into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn ack(kind: ResourceType, nonce: &str) -> DeltaDiscoveryRequest {
    subscribe(kind, &[], nonce)
}

/// `web.shop` (custom health, one instance) and `api.shop` (one instance).
fn fixture() -> (Registry, String, String, Builder) {
    let (reg, web) = registry_with_service("shop", "web", true);
    let ns = reg
        .read()
        .service(&web)
        .unwrap()
        .service
        .namespace_id
        .clone();
    let api = reg
        .create_service(crate::registry::CreateService {
            name: "api".into(),
            namespace_id: ns,
            description: None,
            dns_config: None,
            health_check_config: None,
            health_check_custom_config: None,
            http_only: false,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .unwrap()
        .id;
    for (svc, ip) in [(&web, "10.0.0.1"), (&api, "10.0.1.1")] {
        register(
            &reg,
            svc,
            "i1",
            &[("AWS_INSTANCE_IPV4", ip), ("AWS_INSTANCE_PORT", "80")],
        );
    }
    (reg, web, api, Builder::default())
}

fn snap(reg: &Registry, b: &mut Builder) -> Snapshot {
    b.build(&reg.read(), &Default::default()).0
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn a_wildcard_subscription_gets_everything_once_and_acks_by_nonce() {
    let (reg, _, _, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let mut d = DeltaStream::default();
    let h = d.handle(&subscribe(ResourceType::Cluster, &[], ""), &s);
    assert_eq!(h.event, Event::Subscribe(ResourceType::Cluster));
    let r = h.response.unwrap();
    assert_eq!(names(&r), ["api.shop", "web.shop"]);
    assert_eq!(r.resources[0].version.len(), 16);
    assert_eq!(
        r.resources[0].resource.as_ref().unwrap().type_url,
        ResourceType::Cluster.url()
    );
    assert_eq!(d.outstanding(), 1);
    let h = d.handle(&ack(ResourceType::Cluster, &r.nonce), &s);
    assert_eq!(
        h.event,
        Event::Ack {
            kind: ResourceType::Cluster,
            version: r.system_version_info.clone()
        }
    );
    assert_eq!(h.response, None);
    assert_eq!(d.outstanding(), 0);
    assert!(d.push(&s).is_empty());
}

#[test]
fn one_instance_change_sends_one_resource_and_a_deleted_service_is_removed() {
    let (reg, web, api, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let mut d = DeltaStream::default();
    let r = d
        .handle(
            &subscribe(ResourceType::Endpoint, &["web.shop", "api.shop"], ""),
            &s,
        )
        .response
        .unwrap();
    assert_eq!(names(&r), ["api.shop", "web.shop"]);
    d.handle(&subscribe(ResourceType::Cluster, &[], ""), &s);

    reg.update_custom_health(&web, "i1", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap();
    let s2 = snap(&reg, &mut b);
    let pushed = d.push(&s2);
    assert_eq!(pushed.len(), 1, "only EDS changed: {pushed:?}");
    assert_eq!(names(&pushed[0]), ["web.shop"]);
    assert!(pushed[0].removed_resources.is_empty());

    reg.deregister_instance(&api, "i1", &Owner::Api).unwrap();
    reg.delete_service(&api, &Owner::Api).unwrap();
    let s3 = snap(&reg, &mut b);
    let pushed = d.push(&s3);
    let by_type: BTreeMap<&str, &DeltaDiscoveryResponse> =
        pushed.iter().map(|r| (r.type_url.as_str(), r)).collect();
    for kind in [ResourceType::Cluster, ResourceType::Endpoint] {
        let r = by_type[kind.url()];
        assert!(r.resources.is_empty(), "{r:?}");
        assert_eq!(r.removed_resources, ["api.shop"]);
    }
    assert!(d.push(&s3).is_empty());
}

#[test]
fn a_reconnecting_client_is_sent_only_what_it_does_not_have() {
    let (reg, _, _, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let current = version_text(s.resources(ResourceType::Endpoint)["web.shop"].version);
    let mut d = DeltaStream::default();
    let r = d
        .handle(
            &DeltaDiscoveryRequest {
                initial_resource_versions: HashMap::from([
                    ("web.shop".to_string(), current),
                    ("api.shop".to_string(), "stale".to_string()),
                ]),
                ..subscribe(ResourceType::Endpoint, &["web.shop", "api.shop"], "")
            },
            &s,
        )
        .response
        .unwrap();
    assert_eq!(names(&r), ["api.shop"]);
}

#[test]
fn a_nack_is_recorded_and_the_resource_is_not_resent_until_it_changes() {
    let (reg, web, _, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let mut d = DeltaStream::default();
    let r = d
        .handle(&subscribe(ResourceType::Endpoint, &["web.shop"], ""), &s)
        .response
        .unwrap();
    d.handle(&ack(ResourceType::Endpoint, &r.nonce), &s);
    reg.update_custom_health(&web, "i1", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap();
    let s2 = snap(&reg, &mut b);
    let bad = d.push(&s2).pop().unwrap();
    let h = d.handle(
        &DeltaDiscoveryRequest {
            error_detail: Some(RpcStatus {
                code: 3,
                message: "rejected".into(),
                details: vec![],
            }),
            ..ack(ResourceType::Endpoint, &bad.nonce)
        },
        &s2,
    );
    let Event::Nack(nack) = &h.event else {
        panic!("{:?}", h.event)
    };
    assert_eq!(nack.rejected_version, bad.system_version_info);
    assert_eq!(nack.message, "rejected");
    assert_eq!(h.response, None);
    assert_eq!(d.last_nack(ResourceType::Endpoint), Some(nack));
    assert!(
        d.push(&s2).is_empty(),
        "the rejected resource is not resent"
    );
    reg.update_custom_health(&web, "i1", HealthStatus::Healthy, &Owner::Api)
        .unwrap();
    let s3 = snap(&reg, &mut b);
    assert_eq!(names(&d.push(&s3)[0]), ["web.shop"]);
}

#[test]
fn subscription_changes_count_even_on_stale_nonces_and_missing_names_are_announced() {
    let (reg, _, _, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let mut d = DeltaStream::default();
    d.handle(&subscribe(ResourceType::Endpoint, &["web.shop"], ""), &s);
    // A nonce never sent: the ACK part is ignored, the subscription is not.
    let h = d.handle(
        &subscribe(ResourceType::Endpoint, &["api.shop", "nope.shop"], "99"),
        &s,
    );
    assert_eq!(h.event, Event::Stale(ResourceType::Endpoint));
    let r = h.response.unwrap();
    assert_eq!(names(&r), ["api.shop"]);
    assert_eq!(r.removed_resources, ["nope.shop"]);

    // Unsubscribed, then asked for again: sent again.
    d.handle(
        &DeltaDiscoveryRequest {
            resource_names_unsubscribe: vec!["web.shop".into()],
            ..subscribe(ResourceType::Endpoint, &[], "")
        },
        &s,
    );
    let r = d
        .handle(&subscribe(ResourceType::Endpoint, &["web.shop"], ""), &s)
        .response
        .unwrap();
    assert_eq!(names(&r), ["web.shop"]);
}

#[test]
fn unanswered_responses_are_bounded() {
    let (reg, web, _, mut b) = fixture();
    let mut d = DeltaStream::default();
    d.handle(
        &subscribe(ResourceType::Endpoint, &["web.shop"], ""),
        &snap(&reg, &mut b),
    );
    for i in 0..100 {
        let status = if i % 2 == 0 {
            HealthStatus::Unhealthy
        } else {
            HealthStatus::Healthy
        };
        reg.update_custom_health(&web, "i1", status, &Owner::Api)
            .unwrap();
        assert_eq!(d.push(&snap(&reg, &mut b)).len(), 1);
    }
    assert_eq!(d.outstanding(), MAX_OUTSTANDING);
    // The oldest were forgotten: answering one is stale.
    let h = d.handle(&ack(ResourceType::Endpoint, "1"), &snap(&reg, &mut b));
    assert_eq!(h.event, Event::Stale(ResourceType::Endpoint));
}
