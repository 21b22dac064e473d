//! Registry semantics, against the in-memory store and the redb store.

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

fn create_ns(reg: &Registry, name: &str, kind: NamespaceType) -> String {
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

fn create_svc(
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

fn a_records() -> Option<DnsConfig> {
    Some(DnsConfig {
        routing_policy: RoutingPolicy::Multivalue,
        records: vec![DnsRecord {
            kind: RecordType::A,
            ttl: 10,
        }],
    })
}

#[test]
fn revision_grows_on_register_attribute_change_and_deregister_but_not_on_health() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "quickship.local", NamespaceType::DnsPrivate);
    let svc = create_svc(&reg, &ns, "inventory-manager", a_records(), true);
    let rev = || reg.read().service(&svc.id).unwrap().service.revision;
    assert_eq!(rev(), 0);
    register(
        &reg,
        &svc.id,
        "i1",
        &[(AWS_INSTANCE_IPV4, "10.0.0.1")],
        Owner::Api,
    )
    .unwrap();
    assert_eq!(rev(), 1);
    // Same attributes again: an update with no change keeps the revision.
    let out = register(
        &reg,
        &svc.id,
        "i1",
        &[(AWS_INSTANCE_IPV4, "10.0.0.1")],
        Owner::Api,
    )
    .unwrap();
    assert!(!out.changed);
    assert_eq!(rev(), 1);
    register(
        &reg,
        &svc.id,
        "i1",
        &[(AWS_INSTANCE_IPV4, "10.0.0.2")],
        Owner::Api,
    )
    .unwrap();
    assert_eq!(rev(), 2);
    assert!(
        reg.update_custom_health(&svc.id, "i1", HealthStatus::Unhealthy, &Owner::Api)
            .unwrap()
    );
    assert_eq!(rev(), 2, "health changes never move the revision");
    assert_eq!(
        reg.read().instance(&svc.id, "i1").unwrap().health,
        HealthStatus::Unhealthy
    );
    reg.deregister_instance(&svc.id, "i1", &Owner::Api).unwrap();
    assert_eq!(rev(), 3);
}

#[test]
fn init_health_status_is_honoured_and_defaults_to_healthy() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "api", NamespaceType::Http);
    let svc = create_svc(&reg, &ns, "db", None, true);
    register(&reg, &svc.id, "a", &[("tablename", "UserAuth")], Owner::Api).unwrap();
    register(
        &reg,
        &svc.id,
        "b",
        &[(AWS_INIT_HEALTH_STATUS, "UNHEALTHY")],
        Owner::Api,
    )
    .unwrap();
    let index = reg.read();
    assert_eq!(
        index.instance(&svc.id, "a").unwrap().health,
        HealthStatus::Healthy
    );
    assert_eq!(
        index.instance(&svc.id, "b").unwrap().health,
        HealthStatus::Unhealthy
    );
}

#[test]
fn services_without_health_checks_report_unknown() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "api", NamespaceType::Http);
    let svc = create_svc(&reg, &ns, "db", None, false);
    register(&reg, &svc.id, "a", &[], Owner::Api).unwrap();
    let index = reg.read();
    let entry = index.service(&svc.id).unwrap();
    assert_eq!(
        entry.reported_health(entry.instances.get("a").unwrap()),
        HealthStatus::Unknown
    );
    drop(index);
    let err = reg
        .update_custom_health(&svc.id, "a", HealthStatus::Healthy, &Owner::Api)
        .unwrap_err();
    assert_eq!(err.aws_type(), "CustomHealthNotFound");
}

#[test]
fn namespace_and_service_name_conflicts_and_idempotent_retries() {
    let reg = Registry::in_memory();
    let req = CreateNamespace {
        name: "quickship.local".into(),
        kind: NamespaceType::DnsPrivate,
        description: None,
        soa_ttl: Some(30),
        vpc: None,
        creator_request_id: Some("req-1".into()),
        tags: vec![],
        owner: Owner::Api,
    };
    let op1 = reg.create_namespace(req.clone()).unwrap();
    let op2 = reg.create_namespace(req.clone()).unwrap();
    assert_eq!(
        op1.id, op2.id,
        "a retried request returns the same operation"
    );
    let err = reg
        .create_namespace(CreateNamespace {
            creator_request_id: Some("req-2".into()),
            name: "QuickShip.Local".into(),
            ..req
        })
        .unwrap_err();
    match err {
        Error::NamespaceAlreadyExists {
            namespace_id,
            creator_request_id,
            ..
        } => {
            assert_eq!(namespace_id, op1.targets[&TargetType::Namespace]);
            assert_eq!(creator_request_id.as_deref(), Some("req-1"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let ns = op1.targets[&TargetType::Namespace].clone();
    create_svc(&reg, &ns, "inventory-manager", a_records(), false);
    let err = reg
        .create_service(CreateService {
            name: "Inventory-Manager".into(),
            namespace_id: ns.clone(),
            description: None,
            dns_config: a_records(),
            health_check_config: None,
            health_check_custom_config: None,
            http_only: false,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .unwrap_err();
    assert_eq!(err.aws_type(), "ServiceAlreadyExists");
}

#[test]
fn deleting_non_empty_resources_is_refused() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "api", NamespaceType::Http);
    let svc = create_svc(&reg, &ns, "db", None, false);
    register(&reg, &svc.id, "a", &[], Owner::Api).unwrap();
    assert_eq!(
        reg.delete_namespace(&ns, &Owner::Api)
            .unwrap_err()
            .aws_type(),
        "ResourceInUse"
    );
    assert_eq!(
        reg.delete_service(&svc.id, &Owner::Api)
            .unwrap_err()
            .aws_type(),
        "ResourceInUse"
    );
    reg.deregister_instance(&svc.id, "a", &Owner::Api).unwrap();
    reg.delete_service(&svc.id, &Owner::Api).unwrap();
    reg.delete_namespace(&ns, &Owner::Api).unwrap();
    assert_eq!(reg.read().namespace_total(), 0);
}

#[test]
fn controller_and_api_never_touch_each_others_instances() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "api", NamespaceType::Http);
    let svc = create_svc(&reg, &ns, "db", None, false);
    register(
        &reg,
        &svc.id,
        "pod-a",
        &[],
        controller("ServiceDiscovery shop/db"),
    )
    .unwrap();
    register(&reg, &svc.id, "manual", &[], Owner::Api).unwrap();

    let err = register(&reg, &svc.id, "pod-a", &[("x", "y")], Owner::Api).unwrap_err();
    assert_eq!(err.aws_type(), "ResourceInUse");
    assert!(
        err.to_string().contains("ServiceDiscovery shop/db"),
        "{err}"
    );
    assert!(
        reg.deregister_instance(&svc.id, "pod-a", &Owner::Api)
            .is_err()
    );
    assert!(
        reg.deregister_instance(&svc.id, "manual", &controller("ServiceDiscovery shop/db"))
            .is_err()
    );
    // A controller of another cluster cannot take over either.
    let other = Owner::Controller {
        cluster: "c2".into(),
        object: "x".into(),
    };
    assert!(reg.deregister_instance(&svc.id, "pod-a", &other).is_err());
    // Controller writes leave no operation records.
    let out = reg
        .deregister_instance(&svc.id, "pod-a", &controller("ServiceDiscovery shop/db"))
        .unwrap();
    assert!(out.operation.is_none());
}

#[test]
fn invalid_input_is_rejected_before_anything_changes() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "quickship.local", NamespaceType::DnsPrivate);
    let svc = create_svc(&reg, &ns, "web", a_records(), false);
    let err = register(&reg, &svc.id, "i1", &[("port", "80")], Owner::Api).unwrap_err();
    assert_eq!(err.aws_type(), "InvalidInput");
    assert!(err.to_string().contains(AWS_INSTANCE_IPV4));
    assert!(
        register(
            &reg,
            &svc.id,
            "bad id",
            &[(AWS_INSTANCE_IPV4, "10.0.0.1")],
            Owner::Api
        )
        .is_err()
    );
    let index = reg.read();
    assert_eq!(index.instance_count(), 0);
    assert_eq!(index.service(&svc.id).unwrap().service.revision, 0);
    drop(index);
    // DnsConfig in an HTTP namespace is refused.
    let http = create_ns(&reg, "plain", NamespaceType::Http);
    let err = reg
        .create_service(CreateService {
            name: "x".into(),
            namespace_id: http,
            description: None,
            dns_config: a_records(),
            health_check_config: None,
            health_check_custom_config: None,
            http_only: false,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .unwrap_err();
    assert_eq!(err.aws_type(), "InvalidInput");
}

#[test]
fn update_service_changes_ttls_but_not_record_types() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "quickship.local", NamespaceType::DnsPrivate);
    let svc = create_svc(&reg, &ns, "web", a_records(), false);
    let op = reg
        .update_service(
            &svc.id,
            UpdateService {
                description: Some("new".into()),
                dns_records: Some(vec![DnsRecord {
                    kind: RecordType::A,
                    ttl: 60,
                }]),
                health_check_config: None,
            },
            &Owner::Api,
        )
        .unwrap();
    assert_eq!(op.kind, OperationType::UpdateService);
    let ttl = reg
        .read()
        .service(&svc.id)
        .unwrap()
        .service
        .dns_config
        .as_ref()
        .unwrap()
        .records[0]
        .ttl;
    assert_eq!(ttl, 60);
    let err = reg
        .update_service(
            &svc.id,
            UpdateService {
                dns_records: Some(vec![DnsRecord {
                    kind: RecordType::Aaaa,
                    ttl: 60,
                }]),
                ..UpdateService::default()
            },
            &Owner::Api,
        )
        .unwrap_err();
    assert!(err.to_string().contains("cannot be changed"));
}

#[test]
fn service_attributes_are_limited_to_thirty() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "api", NamespaceType::Http);
    let svc = create_svc(&reg, &ns, "db", None, false);
    let first: Attributes = (0..20).map(|i| (format!("k{i}"), "v")).collect();
    reg.update_service_attributes(&svc.id, first, &Owner::Api)
        .unwrap();
    let more: Attributes = (20..31).map(|i| (format!("k{i}"), "v")).collect();
    let err = reg
        .update_service_attributes(&svc.id, more, &Owner::Api)
        .unwrap_err();
    assert_eq!(err.aws_type(), "ServiceAttributesLimitExceededException");
    reg.delete_service_attributes(&svc.id, &["k0".into()], &Owner::Api)
        .unwrap();
    assert_eq!(
        reg.read()
            .service(&svc.id)
            .unwrap()
            .service
            .attributes
            .len(),
        19
    );
}

#[test]
fn tags_by_arn() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "api", NamespaceType::Http);
    let arn = reg.config().scope.namespace_arn(&ns);
    reg.tag_resource(
        &arn,
        vec![Tag {
            key: "team".into(),
            value: "a".into(),
        }],
    )
    .unwrap();
    reg.tag_resource(
        &arn,
        vec![Tag {
            key: "team".into(),
            value: "b".into(),
        }],
    )
    .unwrap();
    assert_eq!(
        reg.list_tags(&arn).unwrap(),
        vec![Tag {
            key: "team".into(),
            value: "b".into()
        }]
    );
    reg.untag_resource(&arn, &["team".into()]).unwrap();
    assert!(reg.list_tags(&arn).unwrap().is_empty());
    let too_many: Vec<Tag> = (0..51)
        .map(|i| Tag {
            key: format!("k{i}"),
            value: String::new(),
        })
        .collect();
    assert_eq!(
        reg.tag_resource(&arn, too_many).unwrap_err().aws_type(),
        "TooManyTagsException"
    );
    let missing = reg.config().scope.service_arn("srv-missing");
    assert_eq!(
        reg.list_tags(&missing).unwrap_err().aws_type(),
        "ResourceNotFoundException"
    );
}

#[test]
fn operation_records_are_retained_up_to_the_limit() {
    let reg = Registry::open(
        Box::new(MemoryStore),
        RegistryConfig {
            operation_retention: 3,
            ..RegistryConfig::default()
        },
    )
    .unwrap();
    let ns = create_ns(&reg, "api", NamespaceType::Http);
    let svc = create_svc(&reg, &ns, "db", None, false);
    for i in 0..5 {
        register(&reg, &svc.id, &format!("i{i}"), &[], Owner::Api).unwrap();
    }
    let index = reg.read();
    assert_eq!(index.operation_count(), 3);
    assert!(
        index
            .operations()
            .all(|o| o.kind == OperationType::RegisterInstance)
    );
}

#[test]
fn instance_quota_per_service() {
    let reg = Registry::open(
        Box::new(MemoryStore),
        RegistryConfig {
            max_instances_per_service: 2,
            ..RegistryConfig::default()
        },
    )
    .unwrap();
    let ns = create_ns(&reg, "api", NamespaceType::Http);
    let svc = create_svc(&reg, &ns, "db", None, false);
    register(&reg, &svc.id, "a", &[], Owner::Api).unwrap();
    register(&reg, &svc.id, "b", &[], Owner::Api).unwrap();
    let err = register(&reg, &svc.id, "c", &[], Owner::Api).unwrap_err();
    assert_eq!(err.aws_type(), "ResourceLimitExceeded");
    // Updating an existing instance is still allowed at the limit.
    register(&reg, &svc.id, "a", &[("k", "v")], Owner::Api).unwrap();
}

#[test]
fn redb_store_restores_exactly_the_same_registry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ns, svc, op_count, snapshot) = {
        let reg = open_redb(&data);
        let ns = create_ns(&reg, "quickship.local", NamespaceType::DnsPrivate);
        let svc = create_svc(&reg, &ns, "inventory-manager", a_records(), true);
        register(
            &reg,
            &svc.id,
            "i1",
            &[(AWS_INSTANCE_IPV4, "10.0.0.1")],
            Owner::Api,
        )
        .unwrap();
        register(
            &reg,
            &svc.id,
            "i2",
            &[(AWS_INSTANCE_IPV4, "10.0.0.2")],
            controller("sd"),
        )
        .unwrap();
        reg.update_custom_health(&svc.id, "i1", HealthStatus::Unhealthy, &Owner::Api)
            .unwrap();
        let index = reg.read();
        let entry = index.service(&svc.id).unwrap().clone();
        (ns, svc.id.clone(), index.operation_count(), entry)
    };
    let reg = open_redb(&data);
    let index = reg.read();
    assert!(index.namespace(&ns).is_some());
    assert_eq!(index.namespace_by_zone("QuickShip.Local.").unwrap().id, ns);
    let entry = index.service(&svc).unwrap();
    assert_eq!(entry.service, snapshot.service);
    assert_eq!(entry.instances, snapshot.instances);
    assert_eq!(entry.service.revision, 2);
    assert_eq!(index.operation_count(), op_count);
    assert_eq!(
        index.instance(&svc, "i1").unwrap().health,
        HealthStatus::Unhealthy
    );
}

#[test]
fn redb_store_refuses_foreign_busy_and_corrupt_directories() {
    let dir = tempfile::tempdir().unwrap();
    // A directory with other files in it.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "hello").unwrap();
    let err = RedbStore::open(&foreign).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "hello"
    );

    // A file where the directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        RedbStore::open(&file).unwrap_err(),
        StoreError::Foreign { .. }
    ));

    // A corrupt database file is reported, not reset.
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join(store::DB_FILE), vec![0x42; 4096]).unwrap();
    let err = RedbStore::open(&corrupt).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(
        std::fs::read(corrupt.join(store::DB_FILE)).unwrap(),
        vec![0x42; 4096]
    );

    // A directory in use.
    let busy = dir.path().join("busy");
    let first = RedbStore::open(&busy).unwrap();
    let err = RedbStore::open(&busy).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(
        err.to_string().contains(&std::process::id().to_string()),
        "{err}"
    );
    drop(first);
    RedbStore::open(&busy).unwrap();
}

#[test]
fn sync_instances_applies_a_controllers_desired_set_atomically() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "quickship.local", NamespaceType::DnsPrivate);
    let svc = create_svc(&reg, &ns, "inventory-manager", a_records(), true);
    let me = controller("ServiceDiscovery shop/inventory-manager");
    register(
        &reg,
        &svc.id,
        "manual",
        &[(AWS_INSTANCE_IPV4, "10.9.9.9")],
        Owner::Api,
    )
    .unwrap();
    let want = |id: &str, ip: &str, health| DesiredInstance {
        id: id.into(),
        attributes: attrs(&[(AWS_INSTANCE_IPV4, ip)]),
        health: Some(health),
    };
    let out = reg
        .sync_instances(
            &svc.id,
            vec![
                want("pod-a", "10.0.0.1", HealthStatus::Healthy),
                want("pod-b", "10.0.0.2", HealthStatus::Unhealthy),
                want("manual", "10.0.0.3", HealthStatus::Healthy),
                DesiredInstance {
                    id: "pod-c".into(),
                    attributes: attrs(&[("no-ip", "x")]),
                    health: Some(HealthStatus::Healthy),
                },
            ],
            &me,
        )
        .unwrap();
    assert_eq!(out.registered, 2);
    assert_eq!(out.rejected.len(), 2, "{:?}", out.rejected);
    let rev = || reg.read().service(&svc.id).unwrap().service.revision;
    assert_eq!(rev(), 3, "manual + two pods");

    // Health only: no revision change. Attribute change and removal: +2.
    let out = reg
        .sync_instances(
            &svc.id,
            vec![want("pod-a", "10.0.0.1", HealthStatus::Unhealthy)],
            &me,
        )
        .unwrap();
    assert_eq!((out.health_changed, out.deregistered), (1, 1));
    assert_eq!(rev(), 4);
    let out = reg
        .sync_instances(
            &svc.id,
            vec![want("pod-a", "10.0.0.5", HealthStatus::Unhealthy)],
            &me,
        )
        .unwrap();
    assert_eq!(out.updated, 1);
    assert_eq!(rev(), 5);
    // Nothing to do: nothing written.
    let out = reg
        .sync_instances(
            &svc.id,
            vec![want("pod-a", "10.0.0.5", HealthStatus::Unhealthy)],
            &me,
        )
        .unwrap();
    assert!(!out.changed());
    // The API's instance is untouched throughout.
    let index = reg.read();
    assert_eq!(
        &index.instance(&svc.id, "manual").unwrap().attributes[AWS_INSTANCE_IPV4],
        "10.9.9.9"
    );
    assert_eq!(index.service(&svc.id).unwrap().instances.len(), 2);
}

fn create_probed_svc(reg: &Registry, ns: &str, name: &str, threshold: i32) -> Service {
    reg.create_service(CreateService {
        name: name.into(),
        namespace_id: ns.into(),
        description: None,
        dns_config: a_records(),
        health_check_config: Some(HealthCheckConfig {
            kind: HealthCheckType::Tcp,
            resource_path: None,
            failure_threshold: Some(threshold),
            interval_seconds: None,
            timeout_seconds: None,
        }),
        health_check_custom_config: None,
        http_only: false,
        creator_request_id: None,
        tags: vec![],
        owner: Owner::Api,
    })
    .unwrap()
}

fn health_of(reg: &Registry, svc: &str, id: &str) -> HealthStatus {
    reg.read().service(svc).unwrap().instances[id].health
}

fn verdict(svc: &str, id: &str, passing: bool) -> ProbeVerdict {
    ProbeVerdict {
        service_id: svc.into(),
        instance_id: id.into(),
        passing,
    }
}

#[test]
fn probe_verdicts_decide_api_instances_and_report_flips() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "probe.local", NamespaceType::DnsPrivate);
    let svc = create_probed_svc(&reg, &ns, "web", 2);
    let ip = [
        ("AWS_INSTANCE_IPV4", "10.0.0.1"),
        ("AWS_INSTANCE_PORT", "80"),
    ];
    register(&reg, &svc.id, "i1", &ip, Owner::Api).unwrap();
    // A new check counts as passing until its first verdict, as in Route 53.
    assert_eq!(health_of(&reg, &svc.id, "i1"), HealthStatus::Healthy);
    let revision = reg.read().service(&svc.id).unwrap().service.revision;
    let generation = reg.generation();

    let flips = reg
        .apply_probe_verdicts(&[
            verdict(&svc.id, "i1", false),
            verdict(&svc.id, "gone", false),
        ])
        .unwrap();
    assert_eq!(flips.len(), 1, "the unknown instance is ignored");
    assert_eq!(
        (flips[0].from, flips[0].to),
        (HealthStatus::Healthy, HealthStatus::Unhealthy)
    );
    assert_eq!(health_of(&reg, &svc.id, "i1"), HealthStatus::Unhealthy);
    assert!(reg.generation() > generation, "subscribers are woken");
    // A repeated verdict changes nothing and commits nothing.
    let generation = reg.generation();
    assert!(
        reg.apply_probe_verdicts(&[verdict(&svc.id, "i1", false)])
            .unwrap()
            .is_empty()
    );
    assert_eq!(reg.generation(), generation);
    // Re-registering keeps the verdict; health never moves the revision.
    register(&reg, &svc.id, "i1", &ip, Owner::Api).unwrap();
    assert_eq!(health_of(&reg, &svc.id, "i1"), HealthStatus::Unhealthy);
    assert_eq!(
        reg.read().service(&svc.id).unwrap().service.revision,
        revision
    );
    reg.apply_probe_verdicts(&[verdict(&svc.id, "i1", true)])
        .unwrap();
    assert_eq!(health_of(&reg, &svc.id, "i1"), HealthStatus::Healthy);
}

#[test]
fn pod_readiness_and_the_active_check_must_both_pass() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "combo.local", NamespaceType::DnsPrivate);
    let svc = create_probed_svc(&reg, &ns, "web", 1);
    let owner = controller("ServiceDiscovery t/web");
    let want = |health| {
        vec![DesiredInstance {
            id: "pod-a".into(),
            attributes: attrs(&[
                ("AWS_INSTANCE_IPV4", "10.0.0.2"),
                ("AWS_INSTANCE_PORT", "8080"),
            ]),
            health: Some(health),
        }]
    };
    reg.sync_instances(&svc.id, want(HealthStatus::Healthy), &owner)
        .unwrap();
    assert_eq!(health_of(&reg, &svc.id, "pod-a"), HealthStatus::Healthy);
    // Probe fails: unhealthy although the pod is Ready.
    let flips = reg
        .apply_probe_verdicts(&[verdict(&svc.id, "pod-a", false)])
        .unwrap();
    assert_eq!(flips[0].owner, owner);
    assert_eq!(health_of(&reg, &svc.id, "pod-a"), HealthStatus::Unhealthy);
    // A re-sync with the pod still Ready keeps the probe's verdict.
    reg.sync_instances(&svc.id, want(HealthStatus::Healthy), &owner)
        .unwrap();
    assert_eq!(health_of(&reg, &svc.id, "pod-a"), HealthStatus::Unhealthy);
    // Probe passes again, but the pod is no longer Ready.
    reg.sync_instances(&svc.id, want(HealthStatus::Unhealthy), &owner)
        .unwrap();
    reg.apply_probe_verdicts(&[verdict(&svc.id, "pod-a", true)])
        .unwrap();
    assert_eq!(health_of(&reg, &svc.id, "pod-a"), HealthStatus::Unhealthy);
    reg.sync_instances(&svc.id, want(HealthStatus::Healthy), &owner)
        .unwrap();
    assert_eq!(health_of(&reg, &svc.id, "pod-a"), HealthStatus::Healthy);
}

#[test]
fn partial_syncs_touch_only_what_they_name_in_one_commit() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "partial.local", NamespaceType::DnsPrivate);
    let a = create_svc(&reg, &ns, "a", a_records(), true);
    let b = create_svc(&reg, &ns, "b", a_records(), true);
    let owner = controller("ServiceDiscovery t/a");
    let inst = |id: &str, ip: &str, health| DesiredInstance {
        id: id.into(),
        attributes: attrs(&[("AWS_INSTANCE_IPV4", ip)]),
        health: Some(health),
    };
    reg.sync_instances(
        &a.id,
        vec![
            inst("p1", "10.0.0.1", HealthStatus::Healthy),
            inst("p2", "10.0.0.2", HealthStatus::Healthy),
        ],
        &owner,
    )
    .unwrap();
    register(
        &reg,
        &a.id,
        "api-1",
        &[("AWS_INSTANCE_IPV4", "10.9.9.9")],
        Owner::Api,
    )
    .unwrap();
    let generation = reg.generation();
    let results = reg
        .sync_partial(vec![
            PartialSync {
                service_id: a.id.clone(),
                owner: owner.clone(),
                upserts: vec![inst("p3", "10.0.0.3", HealthStatus::Unhealthy)],
                // api-1 is not ours and stays; p1 goes; p2 is not named and stays.
                removals: vec!["p1".into(), "api-1".into()],
            },
            PartialSync {
                service_id: b.id.clone(),
                owner: controller("ServiceDiscovery t/b"),
                upserts: vec![inst("bad id!", "10.0.0.4", HealthStatus::Healthy)],
                removals: vec![],
            },
            PartialSync {
                service_id: "srv-doesnotexist00000".into(),
                owner: owner.clone(),
                upserts: vec![],
                removals: vec![],
            },
        ])
        .unwrap();
    assert_eq!(reg.generation(), generation + 1, "one commit for the batch");
    let first = results[0].as_ref().unwrap();
    assert_eq!((first.registered, first.deregistered), (1, 1));
    assert_eq!(results[1].as_ref().unwrap().rejected.len(), 1);
    assert!(matches!(results[2], Err(Error::ServiceNotFound(_))));
    let index = reg.read();
    let ids: Vec<&String> = index.service(&a.id).unwrap().instances.keys().collect();
    assert_eq!(ids, ["api-1", "p2", "p3"]);
    assert_eq!(
        index.service(&a.id).unwrap().instances["p3"].health,
        HealthStatus::Unhealthy
    );
    assert!(index.service(&b.id).unwrap().instances.is_empty());
}

#[test]
fn custom_health_of_controller_instances_is_reported_through_the_api_only_when_left_to_it() {
    let reg = Registry::in_memory();
    let ns = create_ns(&reg, "custom.local", NamespaceType::DnsPrivate);
    let svc = create_svc(&reg, &ns, "web", a_records(), true);
    let owner = controller("ServiceDiscovery t/web");
    let want = |id: &str, health| DesiredInstance {
        id: id.into(),
        attributes: attrs(&[("AWS_INSTANCE_IPV4", "10.0.0.7")]),
        health,
    };
    reg.sync_instances(
        &svc.id,
        vec![
            want("ready", Some(HealthStatus::Healthy)),
            want("custom", None),
        ],
        &owner,
    )
    .unwrap();
    // Readiness-driven: the API may not override it.
    let err = reg
        .update_custom_health(&svc.id, "ready", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap_err();
    assert!(err.to_string().contains("ServiceDiscovery t/web"), "{err}");
    // Left to reports: new ones start HEALTHY, reports stick across syncs.
    assert_eq!(health_of(&reg, &svc.id, "custom"), HealthStatus::Healthy);
    assert!(
        reg.update_custom_health(&svc.id, "custom", HealthStatus::Unhealthy, &Owner::Api)
            .unwrap()
    );
    reg.sync_instances(
        &svc.id,
        vec![
            want("ready", Some(HealthStatus::Healthy)),
            want("custom", None),
        ],
        &owner,
    )
    .unwrap();
    assert_eq!(health_of(&reg, &svc.id, "custom"), HealthStatus::Unhealthy);
    // The API still cannot deregister it.
    assert!(
        reg.deregister_instance(&svc.id, "custom", &Owner::Api)
            .is_err()
    );
}

#[test]
fn instances_share_their_service_id_and_owner_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let open = || open_redb(&data);
    let me = controller("ServiceDiscovery shop/web");
    let svc_id = {
        let reg = open();
        let ns = create_ns(&reg, "share.local", NamespaceType::DnsPrivate);
        let svc = create_svc(&reg, &ns, "web", a_records(), true);
        register(
            &reg,
            &svc.id,
            "manual",
            &[(AWS_INSTANCE_IPV4, "10.9.9.9")],
            Owner::Api,
        )
        .unwrap();
        let want: Vec<DesiredInstance> = (0..3)
            .map(|i| DesiredInstance {
                id: format!("pod-{i}"),
                attributes: attrs(&[(AWS_INSTANCE_IPV4, &format!("10.0.0.{i}"))]),
                health: Some(HealthStatus::Healthy),
            })
            .collect();
        reg.sync_instances(&svc.id, want, &me).unwrap();
        svc.id
    };
    // Checked on the registry restored from the store: what the index
    // builds at start-up must share as much as what it built at write time.
    let reg = open();
    let index = reg.read();
    let get = |id: &str| index.instance(&svc_id, id).unwrap();
    let (a, b, c, manual) = (get("pod-0"), get("pod-1"), get("pod-2"), get("manual"));
    for other in [b, c, manual] {
        assert!(Arc::ptr_eq(&a.service_id, &other.service_id));
    }
    assert!(Arc::ptr_eq(&a.owner, &b.owner) && Arc::ptr_eq(&b.owner, &c.owner));
    assert_eq!(*a.owner, me);
    assert_eq!(*manual.owner, Owner::Api, "an instance keeps its own owner");
    assert_eq!(&*a.service_id, svc_id.as_str());
}
