use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;

use super::*;
use crate::registry::Registry;
use crate::registry::model::{HealthStatus, Owner};
use crate::xds::snapshot::Builder;
use crate::xds::snapshot::tests::{register, registry_with_service};

fn request(kind: ResourceType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        node: Some(Node {
            id: "test".into(),
            ..Default::default()
        }),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        type_url: kind.url().into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn nack(kind: ResourceType, names: &[&str], kept: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "duplicate endpoint".into(),
            details: vec![],
        }),
        ..request(kind, names, kept, nonce)
    }
}

/// A registry with `web.shop` (two instances, custom health) and `api.shop`.
fn fixture() -> (Registry, String, Builder) {
    let (reg, web) = registry_with_service("shop", "web", true);
    for (id, ip) in [("w1", "10.0.0.1"), ("w2", "10.0.0.2")] {
        register(
            &reg,
            &web,
            id,
            &[("AWS_INSTANCE_IPV4", ip), ("AWS_INSTANCE_PORT", "80")],
        );
    }
    let ns = reg
        .read()
        .service(&web)
        .unwrap()
        .service
        .namespace_id
        .clone();
    reg.create_service(crate::registry::CreateService {
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
    .unwrap();
    (reg, web, Builder::default())
}

fn snap(reg: &Registry, builder: &mut Builder) -> Snapshot {
    builder.build(&reg.read(), &Default::default()).0
}

fn names_in(r: &DiscoveryResponse) -> usize {
    r.resources.len()
}

#[test]
fn first_request_is_answered_and_its_ack_is_not() {
    let (reg, _, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let mut ads = AdsStream::default();
    let h = ads.handle(&request(ResourceType::Listener, &["web.shop"], "", ""), &s);
    assert_eq!(h.event, Event::Subscribe(ResourceType::Listener));
    let r = h.response.unwrap();
    assert_eq!(r.type_url, ResourceType::Listener.url());
    assert_eq!(names_in(&r), 1);
    assert_eq!(r.nonce, "1");
    assert_eq!(r.version_info.len(), 16);

    let h = ads.handle(
        &request(ResourceType::Listener, &["web.shop"], &r.version_info, "1"),
        &s,
    );
    assert_eq!(
        h.event,
        Event::Ack {
            kind: ResourceType::Listener,
            version: r.version_info.clone()
        }
    );
    assert_eq!(h.response, None);
    assert_eq!(
        ads.acked_version(ResourceType::Listener),
        Some(r.version_info.as_str())
    );
    // The same snapshot again: nothing to push.
    assert!(ads.push(&s).is_empty());
}

#[test]
fn a_change_is_pushed_only_for_the_types_it_touches() {
    let (reg, web, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let mut ads = AdsStream::default();
    let mut sent = BTreeMap::new();
    for kind in ResourceType::ALL {
        let r = ads
            .handle(&request(kind, &["web.shop"], "", ""), &s)
            .response
            .unwrap();
        sent.insert(kind, r);
    }
    for (kind, r) in &sent {
        ads.handle(
            &request(*kind, &["web.shop"], &r.version_info, &r.nonce),
            &s,
        );
    }
    reg.update_custom_health(&web, "w2", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap();
    let s2 = snap(&reg, &mut b);
    let pushed = ads.push(&s2);
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0].type_url, ResourceType::Endpoint.url());
    assert_ne!(
        pushed[0].version_info,
        sent[&ResourceType::Endpoint].version_info
    );
    assert_eq!(pushed[0].nonce, "5");
    // Pushed once: the same snapshot does not push again.
    assert!(ads.push(&s2).is_empty());
}

#[test]
fn a_nack_is_recorded_the_rejected_version_is_not_resent_and_the_next_change_is() {
    let (reg, web, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let mut ads = AdsStream::default();
    let first = ads
        .handle(&request(ResourceType::Endpoint, &["web.shop"], "", ""), &s)
        .response
        .unwrap();
    ads.handle(
        &request(
            ResourceType::Endpoint,
            &["web.shop"],
            &first.version_info,
            &first.nonce,
        ),
        &s,
    );
    reg.update_custom_health(&web, "w1", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap();
    let s2 = snap(&reg, &mut b);
    let bad = ads.push(&s2).pop().unwrap();

    // The client rejects it and keeps `first`.
    let h = ads.handle(
        &nack(
            ResourceType::Endpoint,
            &["web.shop"],
            &first.version_info,
            &bad.nonce,
        ),
        &s2,
    );
    let expected = Nack {
        kind: ResourceType::Endpoint,
        rejected_version: bad.version_info.clone(),
        kept_version: first.version_info.clone(),
        code: 3,
        message: "duplicate endpoint".into(),
        resources: vec!["web.shop".into()],
    };
    assert_eq!(h.event, Event::Nack(expected.clone()));
    assert_eq!(expected.blamed(), ["web.shop"]);
    assert_eq!(h.response, None, "the rejected version is not sent again");
    assert_eq!(ads.last_nack(ResourceType::Endpoint), Some(&expected));
    assert_eq!(
        ads.acked_version(ResourceType::Endpoint),
        Some(first.version_info.as_str()),
        "the last good version is still the ACKed one"
    );
    assert!(ads.push(&s2).is_empty());

    // The next change goes out as a new version.
    reg.update_custom_health(&web, "w1", HealthStatus::Healthy, &Owner::Api)
        .unwrap();
    let s3 = snap(&reg, &mut b);
    let next = ads.push(&s3).pop().unwrap();
    assert_ne!(next.version_info, bad.version_info);
    // Back to the content the client ACKed: the same (content-hashed) version.
    assert_eq!(next.version_info, first.version_info);
}

#[test]
fn stale_nonces_are_ignored_and_subscription_changes_are_answered_at_once() {
    let (reg, web, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let mut ads = AdsStream::default();
    let first = ads
        .handle(&request(ResourceType::Endpoint, &["web.shop"], "", ""), &s)
        .response
        .unwrap();
    reg.update_custom_health(&web, "w1", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap();
    let s2 = snap(&reg, &mut b);
    let second = ads.push(&s2).pop().unwrap();
    // The ACK of the first response crossed the second: stale.
    let h = ads.handle(
        &request(
            ResourceType::Endpoint,
            &["web.shop"],
            &first.version_info,
            &first.nonce,
        ),
        &s2,
    );
    assert_eq!(h.event, Event::Stale(ResourceType::Endpoint));
    assert_eq!(h.response, None);
    assert_eq!(ads.acked_version(ResourceType::Endpoint), None);

    // Adding a name is answered right away, with both.
    let h = ads.handle(
        &request(
            ResourceType::Endpoint,
            &["web.shop", "api.shop"],
            &second.version_info,
            &second.nonce,
        ),
        &s2,
    );
    assert!(matches!(h.event, Event::Ack { .. }));
    assert_eq!(names_in(&h.response.unwrap()), 2);

    // A name that does not exist yet gets an answer without it.
    let mut fresh = AdsStream::default();
    let r = fresh
        .handle(
            &request(ResourceType::Endpoint, &["nope.shop"], "", ""),
            &s2,
        )
        .response
        .unwrap();
    assert_eq!(names_in(&r), 0);
}

#[test]
fn lds_and_cds_take_wildcards_rds_and_eds_do_not_and_unknown_types_are_ignored() {
    let (reg, _, mut b) = fixture();
    let s = snap(&reg, &mut b);
    let mut ads = AdsStream::default();
    for names in [&[][..], &["*"]] {
        let r = AdsStream::default()
            .handle(&request(ResourceType::Cluster, names, "", ""), &s)
            .response
            .unwrap();
        assert_eq!(names_in(&r), 2, "{names:?}");
    }
    let h = ads.handle(&request(ResourceType::Endpoint, &[], "", ""), &s);
    assert_eq!(h.event, Event::Subscribe(ResourceType::Endpoint));
    assert_eq!(
        h.response, None,
        "an empty EDS subscription asks for nothing"
    );
    let url = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    let h = ads.handle(
        &DiscoveryRequest {
            type_url: url.into(),
            ..Default::default()
        },
        &s,
    );
    assert_eq!(h.event, Event::UnknownType(url.into()));
    assert_eq!(h.response, None);
}

#[test]
fn a_nack_blames_the_resources_its_message_names() {
    let nack = |message: &str| Nack {
        kind: ResourceType::Endpoint,
        rejected_version: "v".into(),
        kept_version: String::new(),
        code: 3,
        message: message.into(),
        resources: vec!["api.shop".into(), "web.shop".into()],
    };
    assert_eq!(
        nack("resource \"web.shop\": duplicate endpoint").blamed(),
        ["web.shop"]
    );
    assert_eq!(nack("bad response").blamed(), ["api.shop", "web.shop"]);
}
