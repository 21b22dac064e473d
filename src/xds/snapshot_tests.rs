use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;

use super::*;
use crate::registry::model::{HealthCheckCustomConfig, NamespaceType, Owner, TargetType};
use crate::registry::{CreateNamespace, CreateService, RegisterInstance, Registry};

pub(in crate::xds) fn registry_with_service(
    ns: &str,
    svc: &str,
    custom_health: bool,
) -> (Registry, String) {
    let reg = Registry::in_memory();
    let op = reg
        .create_namespace(CreateNamespace {
            name: ns.into(),
            kind: NamespaceType::Http,
            description: None,
            soa_ttl: None,
            vpc: None,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .unwrap();
    let ns_id = op.targets[&TargetType::Namespace].clone();
    let id = add_service(&reg, &ns_id, svc, custom_health);
    (reg, id)
}

fn add_service(reg: &Registry, ns_id: &str, svc: &str, custom_health: bool) -> String {
    reg.create_service(CreateService {
        name: svc.into(),
        namespace_id: ns_id.into(),
        description: None,
        dns_config: None,
        health_check_config: None,
        health_check_custom_config: custom_health.then_some(HealthCheckCustomConfig {
            failure_threshold: None,
        }),
        http_only: false,
        creator_request_id: None,
        tags: vec![],
        owner: Owner::Api,
    })
    .unwrap()
    .id
}

pub(in crate::xds) fn register(reg: &Registry, svc: &str, id: &str, attrs: &[(&str, &str)]) {
    reg.register_instance(RegisterInstance {
        service_id: svc.into(),
        instance_id: id.into(),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        creator_request_id: None,
        owner: Owner::Api,
    })
    .unwrap();
}

fn decode<M: Message + Default>(any: &Any) -> M {
    M::decode(&*any.value).unwrap()
}

fn cla(snapshot: &Snapshot, name: &str) -> ClusterLoadAssignment {
    decode(&snapshot.resources(ResourceType::Endpoint)[name].body)
}

/// (address, port, health, zone) of every endpoint, in order.
fn endpoints(cla: &ClusterLoadAssignment) -> Vec<(String, u32, EnvoyHealth, String)> {
    cla.endpoints
        .iter()
        .flat_map(|l| {
            let zone = l.locality.as_ref().unwrap().zone.clone();
            l.lb_endpoints.iter().map(move |e| {
                let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                    panic!("not an endpoint: {e:?}");
                };
                let Some(address::Address::SocketAddress(sa)) =
                    &ep.address.as_ref().unwrap().address
                else {
                    panic!("not a socket address");
                };
                let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                    panic!("no port");
                };
                (
                    sa.address.clone(),
                    port,
                    EnvoyHealth::try_from(e.health_status).unwrap(),
                    zone.clone(),
                )
            })
        })
        .collect()
}

fn build(reg: &Registry, builder: &mut Builder) -> (Snapshot, BuildStats) {
    builder.build(&reg.read(), &Default::default())
}

#[test]
fn a_service_becomes_a_listener_route_cluster_and_endpoints_of_one_name() {
    let (reg, svc) = registry_with_service("shop", "inventory", false);
    register(
        &reg,
        &svc,
        "i-1",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.1"),
            ("AWS_INSTANCE_PORT", "8080"),
        ],
    );
    let (snap, stats) = build(&reg, &mut Builder::default());
    assert_eq!(
        stats,
        BuildStats {
            rebuilt: 1,
            services: 1,
            problems: vec![],
        }
    );
    let name = "inventory.shop";
    for kind in ResourceType::ALL {
        let names: Vec<_> = snap.resources(kind).keys().cloned().collect();
        assert_eq!(names, [name], "{kind:?}");
        assert_eq!(snap.resources(kind)[name].body.type_url, kind.url());
    }

    let listener: Listener = decode(&snap.resources(ResourceType::Listener)[name].body);
    let hcm: HttpConnectionManager = decode(
        listener
            .api_listener
            .as_ref()
            .unwrap()
            .api_listener
            .as_ref()
            .unwrap(),
    );
    let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("routes must come over RDS: {hcm:?}");
    };
    assert_eq!(rds.route_config_name, name);
    assert!(matches!(
        rds.config_source.as_ref().unwrap().config_source_specifier,
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(
        hcm.http_filters.last().unwrap().name,
        "envoy.filters.http.router"
    );

    let rc: RouteConfiguration = decode(&snap.resources(ResourceType::Route)[name].body);
    let action = &rc.virtual_hosts[0].routes[0].action;
    let Some(route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c)),
        ..
    })) = action
    else {
        panic!("one route to the cluster: {rc:?}");
    };
    assert_eq!(c, name);

    let cluster: Cluster = decode(&snap.resources(ResourceType::Cluster)[name].body);
    assert_eq!(
        cluster.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    let eds = cluster.eds_cluster_config.unwrap();
    assert_eq!(eds.service_name, name);
    assert!(matches!(
        eds.eds_config.unwrap().config_source_specifier,
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));

    let cla = cla(&snap, name);
    assert_eq!(cla.cluster_name, name);
    // No health check: Cloud Map reports UNKNOWN, which clients still use.
    assert_eq!(
        endpoints(&cla),
        [("10.0.0.1".into(), 8080, EnvoyHealth::Unknown, String::new())]
    );
}

#[test]
fn endpoints_carry_health_locality_metadata_and_skip_instances_without_address_or_port() {
    let (reg, svc) = registry_with_service("shop", "web", true);
    let ep = |ip: &'static str, zone: &'static str| {
        [
            ("AWS_INSTANCE_IPV4", ip),
            ("AWS_INSTANCE_PORT", "80"),
            ("AVAILABILITY_ZONE", zone),
            ("REGION", "eu-west-1"),
            ("version", "v1"),
        ]
    };
    register(&reg, &svc, "a", &ep("10.0.0.1", "eu-west-1a"));
    register(&reg, &svc, "b", &ep("10.0.0.2", "eu-west-1b"));
    register(&reg, &svc, "c", &ep("10.0.0.3", "eu-west-1a"));
    register(&reg, &svc, "no-port", &[("AWS_INSTANCE_IPV4", "10.0.0.9")]);
    register(
        &reg,
        &svc,
        "cname",
        &[("AWS_INSTANCE_CNAME", "db.example.com")],
    );
    register(
        &reg,
        &svc,
        "dual",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.4"),
            ("AWS_INSTANCE_IPV6", "fd00::4"),
            ("AWS_INSTANCE_PORT", "81"),
        ],
    );
    register(
        &reg,
        &svc,
        "drain",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.5"),
            ("AWS_INSTANCE_PORT", "80"),
            ("WAYMARK_DRAINING", "1767225600000"),
        ],
    );
    reg.update_custom_health(&svc, "c", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap();

    let (snap, _) = build(&reg, &mut Builder::default());
    let cla = cla(&snap, "web.shop");
    use EnvoyHealth::*;
    assert_eq!(
        endpoints(&cla),
        [
            // No locality attributes: the empty locality sorts first; within
            // a locality, instances go in id order.
            ("10.0.0.5".into(), 80, Draining, "".into()),
            ("10.0.0.4".into(), 81, Healthy, "".into()),
            ("10.0.0.1".into(), 80, Healthy, "eu-west-1a".into()),
            ("10.0.0.3".into(), 80, Unhealthy, "eu-west-1a".into()),
            ("10.0.0.2".into(), 80, Healthy, "eu-west-1b".into()),
        ]
    );
    let weights: Vec<u32> = cla
        .endpoints
        .iter()
        .map(|l| l.load_balancing_weight.unwrap().value)
        .collect();
    // Usable endpoints per locality: draining and unhealthy ones do not count.
    assert_eq!(weights, [1, 1, 1]);
    assert_eq!(
        cla.endpoints[1].locality.as_ref().unwrap().region,
        "eu-west-1"
    );

    let a = &cla.endpoints[1].lb_endpoints[0];
    let meta = &a.metadata.as_ref().unwrap().filter_metadata[METADATA_KEY].fields;
    let text = |k: &str| match &meta[k].kind {
        Some(value::Kind::StringValue(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("version"), "v1");
    assert_eq!(text("AWS_INSTANCE_IPV4"), "10.0.0.1");
    assert_eq!(text("INSTANCE_ID"), "a");

    let Some(lb_endpoint::HostIdentifier::Endpoint(dual)) =
        &cla.endpoints[0].lb_endpoints[1].host_identifier
    else {
        panic!()
    };
    assert_eq!(dual.hostname, "dual");
    let extra = dual.additional_addresses[0].address.as_ref().unwrap();
    assert!(
        matches!(&extra.address, Some(address::Address::SocketAddress(s)) if s.address == "fd00::4"),
        "{extra:?}"
    );
}

#[test]
fn subsets_filter_by_attributes_and_are_named_after_them() {
    let (reg, svc) = registry_with_service("shop", "web", false);
    for (id, ip, version) in [("a", "10.0.0.1", "v1"), ("b", "10.0.0.2", "v2")] {
        register(
            &reg,
            &svc,
            id,
            &[
                ("AWS_INSTANCE_IPV4", ip),
                ("AWS_INSTANCE_PORT", "80"),
                ("version", version),
            ],
        );
    }
    let subset = [("version".to_string(), "v2".to_string())];
    let name = ClusterName {
        service: "web.shop",
        subset: &subset,
    }
    .to_string();
    assert_eq!(name, "web.shop/version=v2");
    let two = [
        ("stage".to_string(), "blue".to_string()),
        ("version".to_string(), "v2".to_string()),
    ];
    assert_eq!(
        ClusterName {
            service: "web.shop",
            subset: &two
        }
        .to_string(),
        "web.shop/stage=blue,version=v2"
    );
    let index = reg.read();
    let entry = index.service(&svc).unwrap();
    let (cla, v2) = load_assignment(&name, entry, &subset);
    assert_eq!(cla.cluster_name, name);
    assert_eq!(
        endpoints(&cla),
        [("10.0.0.2".into(), 80, EnvoyHealth::Unknown, "".into())]
    );
    let (all, v_all) = load_assignment("web.shop", entry, &[]);
    assert_eq!(endpoints(&all).len(), 2);
    assert_ne!(v2, v_all);
}

#[test]
fn only_changed_services_are_rebuilt_and_unchanged_resources_keep_their_versions() {
    let (reg, web) = registry_with_service("shop", "web", true);
    let ns_id = reg
        .read()
        .service(&web)
        .unwrap()
        .service
        .namespace_id
        .clone();
    let api = add_service(&reg, &ns_id, "api", true);
    let attrs = |ip: &'static str| [("AWS_INSTANCE_IPV4", ip), ("AWS_INSTANCE_PORT", "80")];
    register(&reg, &web, "w1", &attrs("10.0.0.1"));
    register(&reg, &api, "a1", &attrs("10.0.1.1"));
    let mut builder = Builder::default();
    let (first, stats) = build(&reg, &mut builder);
    assert_eq!(stats.rebuilt, 2);
    let version = |s: &Snapshot, kind, name: &str| s.resources(kind)[name].version;

    // Nothing changed: nothing rebuilt, same versions.
    let (again, stats) = build(&reg, &mut builder);
    assert_eq!(stats.rebuilt, 0);
    for kind in ResourceType::ALL {
        for name in ["web.shop", "api.shop"] {
            assert_eq!(version(&first, kind, name), version(&again, kind, name));
        }
    }

    // A health change (no revision bump) rebuilds that service only, and
    // only its endpoints change.
    reg.update_custom_health(&web, "w1", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap();
    let (after, stats) = build(&reg, &mut builder);
    assert_eq!(stats.rebuilt, 1);
    assert_ne!(
        version(&first, ResourceType::Endpoint, "web.shop"),
        version(&after, ResourceType::Endpoint, "web.shop")
    );
    for kind in [
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Cluster,
    ] {
        assert_eq!(
            version(&first, kind, "web.shop"),
            version(&after, kind, "web.shop")
        );
    }
    assert_eq!(
        version(&first, ResourceType::Endpoint, "api.shop"),
        version(&after, ResourceType::Endpoint, "api.shop")
    );
    assert_eq!(
        endpoints(&cla(&after, "web.shop"))[0].2,
        EnvoyHealth::Unhealthy
    );

    // A new instance (revision bump) too.
    register(&reg, &api, "a2", &attrs("10.0.1.2"));
    let (after, stats) = build(&reg, &mut builder);
    assert_eq!(stats.rebuilt, 1);
    assert_eq!(endpoints(&cla(&after, "api.shop")).len(), 2);

    // A fresh builder arrives at the same versions (they are content hashes).
    let (fresh, _) = build(&reg, &mut Builder::default());
    for kind in ResourceType::ALL {
        for name in ["web.shop", "api.shop"] {
            assert_eq!(version(&after, kind, name), version(&fresh, kind, name));
        }
    }

    // A deleted service disappears from every type.
    reg.deregister_instance(&api, "a1", &Owner::Api).unwrap();
    reg.deregister_instance(&api, "a2", &Owner::Api).unwrap();
    reg.delete_service(&api, &Owner::Api).unwrap();
    let (after, _) = build(&reg, &mut builder);
    for kind in ResourceType::ALL {
        let names: Vec<_> = after.resources(kind).keys().cloned().collect();
        assert_eq!(names, ["web.shop"]);
    }
}

#[test]
fn type_urls_round_trip_and_only_lds_and_cds_take_wildcards() {
    for kind in ResourceType::ALL {
        assert_eq!(ResourceType::from_url(kind.url()), Some(kind));
    }
    assert_eq!(
        ResourceType::from_url(Cluster::type_url().as_str()),
        Some(ResourceType::Cluster)
    );
    assert_eq!(
        ResourceType::from_url(ClusterLoadAssignment::type_url().as_str()),
        Some(ResourceType::Endpoint)
    );
    assert_eq!(
        ResourceType::from_url(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
        ),
        None
    );
    assert!(ResourceType::Listener.wildcard_capable());
    assert!(ResourceType::Cluster.wildcard_capable());
    assert!(!ResourceType::Route.wildcard_capable());
    assert!(!ResourceType::Endpoint.wildcard_capable());
}

#[test]
fn traffic_splits_parse_and_bad_ones_say_why() {
    let split: TrafficSplit = "version:v1=90, v2=10".parse().unwrap();
    assert_eq!(
        split,
        TrafficSplit {
            key: "version".into(),
            weights: vec![("v1".into(), 90), ("v2".into(), 10)],
        }
    );
    for (bad, why) in [
        ("v1=90,v2=10", "expected <key>"),
        (":v1=1", "key is empty"),
        ("version:v1", "not <value>=<weight>"),
        ("version:v1=ninety", "not a whole number"),
        ("version:v1=-1", "not a whole number"),
        ("version:v1=1,v1=2", "given twice"),
        ("version:=1", "value is empty"),
        ("version:v1=0,v2=0", "more than 0"),
        ("version:a=4294967295,b=1", "fit 32 bits"),
    ] {
        let err = bad.parse::<TrafficSplit>().unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
    let many: String = (0..=MAX_SPLIT_SUBSETS)
        .map(|i| format!("v{i}=1"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(format!("version:{many}").parse::<TrafficSplit>().is_err());
}

#[test]
fn a_traffic_split_adds_subset_clusters_and_a_weighted_route() {
    let (reg, svc) = registry_with_service("shop", "web", false);
    for (id, ip, version) in [
        ("a", "10.0.0.1", "v1"),
        ("b", "10.0.0.2", "v1"),
        ("c", "10.0.0.3", "v2"),
    ] {
        register(
            &reg,
            &svc,
            id,
            &[
                ("AWS_INSTANCE_IPV4", ip),
                ("AWS_INSTANCE_PORT", "80"),
                ("version", version),
            ],
        );
    }
    let mut builder = Builder::default();
    let split = |text: &str| {
        reg.update_service_attributes(
            &svc,
            [(WAYMARK_TRAFFIC_SPLIT.to_string(), text.to_string())]
                .into_iter()
                .collect(),
            &Owner::Api,
        )
        .unwrap();
    };
    split("version:v1=90,v2=10");
    let (snap, stats) = build(&reg, &mut builder);
    assert!(stats.problems.is_empty(), "{stats:?}");
    let names = |kind| -> Vec<String> { snap.resources(kind).keys().cloned().collect() };
    let want = ["web.shop", "web.shop/version=v1", "web.shop/version=v2"];
    assert_eq!(names(ResourceType::Cluster), want);
    assert_eq!(names(ResourceType::Endpoint), want);
    assert_eq!(names(ResourceType::Listener), ["web.shop"]);
    let addresses = |name: &str| -> Vec<String> {
        endpoints(&cla(&snap, name))
            .into_iter()
            .map(|e| e.0)
            .collect()
    };
    assert_eq!(addresses("web.shop/version=v1"), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(addresses("web.shop/version=v2"), ["10.0.0.3"]);
    assert_eq!(addresses("web.shop").len(), 3);
    let cluster: Cluster =
        decode(&snap.resources(ResourceType::Cluster)["web.shop/version=v2"].body);
    assert_eq!(
        cluster.eds_cluster_config.unwrap().service_name,
        "web.shop/version=v2"
    );

    let rc: RouteConfiguration = decode(&snap.resources(ResourceType::Route)["web.shop"].body);
    let Some(route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(w)),
        ..
    })) = &rc.virtual_hosts[0].routes[0].action
    else {
        panic!("a weighted route: {rc:?}");
    };
    let weights: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        weights,
        [("web.shop/version=v1", 90), ("web.shop/version=v2", 10)]
    );

    // A bad split is reported and ignored: one route to the whole service.
    split("version:v1=90,v2");
    let (snap, stats) = build(&reg, &mut builder);
    assert_eq!(stats.problems.len(), 1);
    assert_eq!(stats.problems[0].0, "web.shop");
    assert!(
        stats.problems[0].1.contains("not <value>=<weight>"),
        "{stats:?}"
    );
    let names = |kind| -> Vec<String> { snap.resources(kind).keys().cloned().collect() };
    assert_eq!(names(ResourceType::Cluster), ["web.shop"]);
    let rc: RouteConfiguration = decode(&snap.resources(ResourceType::Route)["web.shop"].body);
    assert!(matches!(
        &rc.virtual_hosts[0].routes[0].action,
        Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c)),
            ..
        })) if c == "web.shop"
    ));
}

#[test]
fn subsets_asked_for_by_name_get_their_own_resources() {
    assert_eq!(SubsetName::parse("web.shop"), None);
    assert_eq!(SubsetName::parse("web.shop/version"), None);
    assert_eq!(SubsetName::parse("web.shop/version="), None);
    assert_eq!(SubsetName::parse("/version=v2"), None);
    let v2 = SubsetName::parse("web.shop/version=v2,stage=blue").unwrap();
    assert_eq!(v2.base, "web.shop");
    assert_eq!(
        v2.filter,
        [
            ("version".to_string(), "v2".to_string()),
            ("stage".to_string(), "blue".to_string())
        ]
    );

    let (reg, svc) = registry_with_service("shop", "web", false);
    for (id, ip, version, stage) in [
        ("a", "10.0.0.1", "v1", "blue"),
        ("b", "10.0.0.2", "v2", "blue"),
        ("c", "10.0.0.3", "v2", "green"),
    ] {
        register(
            &reg,
            &svc,
            id,
            &[
                ("AWS_INSTANCE_IPV4", ip),
                ("AWS_INSTANCE_PORT", "80"),
                ("version", version),
                ("stage", stage),
            ],
        );
    }
    let demanded: BTreeSet<SubsetName> = [
        v2.clone(),
        SubsetName::parse("web.shop/version=v1").unwrap(),
        SubsetName::parse("gone.shop/version=v1").unwrap(),
    ]
    .into();
    let mut builder = Builder::default();
    let (snap, stats) = builder.build(&reg.read(), &demanded);
    assert_eq!(stats.rebuilt, 1);
    for kind in ResourceType::ALL {
        let names: Vec<_> = snap.resources(kind).keys().cloned().collect();
        assert_eq!(
            names,
            [
                "web.shop",
                "web.shop/version=v1",
                "web.shop/version=v2,stage=blue"
            ],
            "{kind:?}"
        );
    }
    let addresses = |name: &str| -> Vec<String> {
        endpoints(&cla(&snap, name))
            .into_iter()
            .map(|e| e.0)
            .collect()
    };
    assert_eq!(addresses("web.shop/version=v2,stage=blue"), ["10.0.0.2"]);
    assert_eq!(addresses("web.shop/version=v1"), ["10.0.0.1"]);
    // The subset's listener routes to the subset's cluster.
    let rc: RouteConfiguration =
        decode(&snap.resources(ResourceType::Route)["web.shop/version=v1"].body);
    assert!(matches!(
        &rc.virtual_hosts[0].routes[0].action,
        Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c)),
            ..
        })) if c == "web.shop/version=v1"
    ));
    // Asking for more rebuilds the service; the same demand does not.
    let (_, stats) = builder.build(&reg.read(), &demanded);
    assert_eq!(stats.rebuilt, 0);
}
