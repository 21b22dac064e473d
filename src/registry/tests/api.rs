//! The API's writes: revisions, conflicts, ownership, validation, limits, tags.

use super::*;

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
