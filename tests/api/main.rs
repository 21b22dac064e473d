//! The Cloud Map API end to end: `waymark serve` driven by the official AWS
//! SDK for Rust (`aws-sdk-servicediscovery`), unmodified.

mod harness;

use std::collections::{HashMap, HashSet};

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::error::ProvideErrorMetadata;
use aws_sdk_servicediscovery::operation::create_http_namespace::CreateHttpNamespaceError;
use aws_sdk_servicediscovery::operation::create_service::CreateServiceError;
use aws_sdk_servicediscovery::types::*;
use harness::{SdkClient, Server, http_namespace, private_namespace, wait_op};

/// The error code (`__type`) of a failed call.
fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<none>").to_string()
}

fn record(t: RecordType, ttl: i64) -> DnsRecord {
    DnsRecord::builder().r#type(t).ttl(ttl).build().unwrap()
}

async fn custom_health_service(client: &Client, ns: &str, name: &str) -> Service {
    client
        .create_service()
        .name(name)
        .namespace_id(ns)
        .health_check_custom_config(HealthCheckCustomConfig::builder().build())
        .send()
        .await
        .unwrap()
        .service()
        .unwrap()
        .clone()
}

async fn register(client: &Client, svc: &str, id: &str, attrs: &[(&str, &str)]) {
    let mut req = client.register_instance().service_id(svc).instance_id(id);
    for (k, v) in attrs {
        req = req.attributes(*k, *v);
    }
    let op = req.send().await.unwrap();
    wait_op(client, op.operation_id().unwrap()).await;
}

async fn revision(client: &Client, ns: &str, svc: &str) -> i64 {
    client
        .discover_instances_revision()
        .namespace_name(ns)
        .service_name(svc)
        .send()
        .await
        .unwrap()
        .instances_revision()
        .unwrap()
}

#[tokio::test]
async fn namespaces_create_get_update_list_and_delete() {
    let server = Server::start();
    let client = server.client();

    let op = client
        .create_private_dns_namespace()
        .name("quickship.local")
        .vpc("vpc-1")
        .description("QuickShip")
        .creator_request_id("create-qs")
        .properties(
            PrivateDnsNamespaceProperties::builder()
                .dns_properties(
                    PrivateDnsPropertiesMutable::builder()
                        .soa(Soa::builder().ttl(30).build().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let op = wait_op(&client, op.operation_id().unwrap()).await;
    assert_eq!(op.r#type(), Some(&OperationType::CreateNamespace));
    assert!(op.create_date().is_some() && op.update_date().is_some());
    let ns_id = op.targets().unwrap()[&OperationTargetType::Namespace].clone();
    assert!(ns_id.starts_with("ns-") && ns_id.len() == 19, "{ns_id}");

    let ns = client.get_namespace().id(&ns_id).send().await.unwrap();
    let ns = ns.namespace().unwrap();
    assert_eq!(ns.name(), Some("quickship.local"));
    assert_eq!(ns.r#type(), Some(&NamespaceType::DnsPrivate));
    assert_eq!(ns.description(), Some("QuickShip"));
    assert_eq!(ns.service_count(), Some(0));
    assert_eq!(ns.creator_request_id(), Some("create-qs"));
    assert_eq!(
        ns.arn().unwrap(),
        format!("arn:aws:servicediscovery:us-east-1:000000000000:namespace/{ns_id}")
    );
    let props = ns.properties().unwrap();
    assert_eq!(
        props.http_properties().unwrap().http_name(),
        Some("quickship.local")
    );
    assert_eq!(props.dns_properties().unwrap().soa().unwrap().ttl(), 30);

    // Update the SOA TTL; the ARN is accepted in place of the id.
    let arn = ns.arn().unwrap().to_string();
    let op = client
        .update_private_dns_namespace()
        .id(&arn)
        .namespace(
            PrivateDnsNamespaceChange::builder()
                .description("QuickShip services")
                .properties(
                    PrivateDnsNamespacePropertiesChange::builder()
                        .dns_properties(
                            PrivateDnsPropertiesMutableChange::builder()
                                .soa(SoaChange::builder().ttl(60).build().unwrap())
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let op = wait_op(&client, op.operation_id().unwrap()).await;
    assert_eq!(op.r#type(), Some(&OperationType::UpdateNamespace));
    let ns = client.get_namespace().id(&ns_id).send().await.unwrap();
    let ns = ns.namespace().unwrap();
    assert_eq!(ns.description(), Some("QuickShip services"));
    assert_eq!(
        ns.properties()
            .unwrap()
            .dns_properties()
            .unwrap()
            .soa()
            .unwrap()
            .ttl(),
        60
    );

    // An HTTP and a public namespace, then list with filters and pages.
    let http = http_namespace(&client, "shop-api").await;
    let op = client
        .create_public_dns_namespace()
        .name("example.com")
        .send()
        .await
        .unwrap();
    wait_op(&client, op.operation_id().unwrap()).await;
    let op = client
        .update_http_namespace()
        .id(&http)
        .namespace(
            HttpNamespaceChange::builder()
                .description("api only")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    wait_op(&client, op.operation_id().unwrap()).await;

    let mut names = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = client
            .list_namespaces()
            .max_results(1)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        names.extend(
            page.namespaces()
                .iter()
                .map(|n| n.name().unwrap().to_string()),
        );
        pages += 1;
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    names.sort();
    assert_eq!(names, ["example.com", "quickship.local", "shop-api"]);
    assert_eq!(pages, 3);

    let dns_only = client
        .list_namespaces()
        .filters(
            NamespaceFilter::builder()
                .name(NamespaceFilterName::Type)
                .values("DNS_PRIVATE")
                .values("DNS_PUBLIC")
                .condition(FilterCondition::In)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(dns_only.namespaces().len(), 2);
    let by_prefix = client
        .list_namespaces()
        .filters(
            NamespaceFilter::builder()
                .name(NamespaceFilterName::Name)
                .values("shop")
                .condition(FilterCondition::BeginsWith)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(by_prefix.namespaces().len(), 1);
    assert_eq!(by_prefix.namespaces()[0].description(), Some("api only"));

    let op = client.delete_namespace().id(&http).send().await.unwrap();
    let op = wait_op(&client, op.operation_id().unwrap()).await;
    assert_eq!(op.r#type(), Some(&OperationType::DeleteNamespace));
    let err = client.get_namespace().id(&http).send().await.unwrap_err();
    assert_eq!(code(&err), "NamespaceNotFound");
}

#[tokio::test]
async fn creator_request_ids_make_retries_idempotent_and_conflicts_carry_ids() {
    let server = Server::start();
    let client = server.client();
    let first = client
        .create_http_namespace()
        .name("idem")
        .creator_request_id("req-1")
        .send()
        .await
        .unwrap();
    let again = client
        .create_http_namespace()
        .name("idem")
        .creator_request_id("req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(first.operation_id(), again.operation_id());
    let ns = wait_op(&client, first.operation_id().unwrap())
        .await
        .targets()
        .unwrap()[&OperationTargetType::Namespace]
        .clone();

    let err = client
        .create_http_namespace()
        .name("idem")
        .creator_request_id("req-2")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    match err {
        CreateHttpNamespaceError::NamespaceAlreadyExists(e) => {
            assert_eq!(e.namespace_id(), Some(ns.as_str()));
            assert_eq!(e.creator_request_id(), Some("req-1"));
        }
        other => panic!("expected NamespaceAlreadyExists, got {other:?}"),
    }

    let create = || {
        client
            .create_service()
            .name("svc")
            .namespace_id(&ns)
            .creator_request_id("svc-req")
            .send()
    };
    let s1 = create().await.unwrap();
    let s2 = create().await.unwrap();
    assert_eq!(s1.service().unwrap().id(), s2.service().unwrap().id());
    let err = client
        .create_service()
        .name("svc")
        .namespace_id(&ns)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    match err {
        CreateServiceError::ServiceAlreadyExists(e) => {
            assert_eq!(e.service_id(), s1.service().unwrap().id());
            assert_eq!(e.service_arn(), s1.service().unwrap().arn());
        }
        other => panic!("expected ServiceAlreadyExists, got {other:?}"),
    }

    // A retried RegisterInstance returns the same operation.
    let svc = s1.service().unwrap().id().unwrap();
    let reg = || {
        client
            .register_instance()
            .service_id(svc)
            .instance_id("i-1")
            .creator_request_id("reg-1")
            .attributes("k", "v")
            .send()
    };
    let r1 = reg().await.unwrap();
    let r2 = reg().await.unwrap();
    assert_eq!(r1.operation_id(), r2.operation_id());
    assert_eq!(revision(&client, "idem", "svc").await, 1);
}

#[tokio::test]
async fn services_create_get_update_attributes_list_and_delete() {
    let server = Server::start();
    let client = server.client();
    let ns = private_namespace(&client, "svc.local").await;
    let other = private_namespace(&client, "other.local").await;

    let created = client
        .create_service()
        .name("inventory-manager")
        .namespace_id(&ns)
        .description("stock")
        .dns_config(
            DnsConfig::builder()
                .routing_policy(RoutingPolicy::Multivalue)
                .dns_records(record(RecordType::Srv, 10))
                .dns_records(record(RecordType::A, 10))
                .build()
                .unwrap(),
        )
        .health_check_config(
            HealthCheckConfig::builder()
                .r#type(HealthCheckType::Http)
                .resource_path("/health")
                .failure_threshold(3)
                .build()
                .unwrap(),
        )
        .tags(Tag::builder().key("team").value("stock").build().unwrap())
        .send()
        .await
        .unwrap();
    let svc = created.service().unwrap();
    let id = svc.id().unwrap().to_string();
    assert!(id.starts_with("srv-") && id.len() == 20);
    assert_eq!(svc.r#type(), Some(&ServiceType::DnsHttp));
    assert_eq!(svc.instance_count(), Some(0));
    assert_eq!(svc.namespace_id(), Some(ns.as_str()));
    let hc = svc.health_check_config().unwrap();
    assert_eq!(hc.resource_path(), Some("/health"));
    assert_eq!(hc.failure_threshold(), Some(3));
    client
        .create_service()
        .name("elsewhere")
        .namespace_id(&other)
        .send()
        .await
        .unwrap();

    // Only TTLs change; omitting the health check removes it (Cloud Map's rule).
    let op = client
        .update_service()
        .id(&id)
        .service(
            ServiceChange::builder()
                .description("stock levels")
                .dns_config(
                    DnsConfigChange::builder()
                        .dns_records(record(RecordType::Srv, 60))
                        .dns_records(record(RecordType::A, 60))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let op = wait_op(&client, op.operation_id().unwrap()).await;
    assert_eq!(op.r#type(), Some(&OperationType::UpdateService));
    let got = client.get_service().id(&id).send().await.unwrap();
    let got = got.service().unwrap();
    assert_eq!(got.description(), Some("stock levels"));
    assert!(got.health_check_config().is_none());
    assert!(
        got.dns_config()
            .unwrap()
            .dns_records()
            .iter()
            .all(|r| r.ttl() == 60)
    );
    let err = client
        .update_service()
        .id(&id)
        .service(
            ServiceChange::builder()
                .dns_config(
                    DnsConfigChange::builder()
                        .dns_records(record(RecordType::Aaaa, 60))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidInput");

    // Service attributes.
    client
        .update_service_attributes()
        .service_id(&id)
        .attributes("owner", "stock-team")
        .attributes("tier", "1")
        .send()
        .await
        .unwrap();
    client
        .delete_service_attributes()
        .service_id(&id)
        .attributes("tier")
        .send()
        .await
        .unwrap();
    let attrs = client
        .get_service_attributes()
        .service_id(&id)
        .send()
        .await
        .unwrap();
    let attrs = attrs.service_attributes().unwrap();
    assert_eq!(attrs.service_arn(), got.arn());
    assert_eq!(
        attrs.attributes().unwrap(),
        &HashMap::from([("owner".to_string(), "stock-team".to_string())])
    );
    let mut too_many = client.update_service_attributes().service_id(&id);
    for i in 0..30 {
        too_many = too_many.attributes(format!("k{i}"), "v");
    }
    assert_eq!(
        code(&too_many.send().await.unwrap_err()),
        "ServiceAttributesLimitExceededException"
    );

    // List with the namespace filter.
    let listed = client
        .list_services()
        .filters(
            ServiceFilter::builder()
                .name(ServiceFilterName::NamespaceId)
                .values(&ns)
                .condition(FilterCondition::Eq)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(listed.services().len(), 1);
    assert_eq!(listed.services()[0].name(), Some("inventory-manager"));
    assert_eq!(
        client
            .list_services()
            .send()
            .await
            .unwrap()
            .services()
            .len(),
        2
    );
    let ns_view = client.get_namespace().id(&ns).send().await.unwrap();
    assert_eq!(ns_view.namespace().unwrap().service_count(), Some(1));

    // Deleting what still has children is refused.
    register(
        &client,
        &id,
        "i-1",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.1"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    )
    .await;
    assert_eq!(
        code(&client.delete_service().id(&id).send().await.unwrap_err()),
        "ResourceInUse"
    );
    assert_eq!(
        code(&client.delete_namespace().id(&ns).send().await.unwrap_err()),
        "ResourceInUse"
    );
    let op = client
        .deregister_instance()
        .service_id(&id)
        .instance_id("i-1")
        .send()
        .await
        .unwrap();
    wait_op(&client, op.operation_id().unwrap()).await;
    client.delete_service().id(&id).send().await.unwrap();
    assert_eq!(
        code(&client.get_service().id(&id).send().await.unwrap_err()),
        "ServiceNotFound"
    );
    client.delete_namespace().id(&ns).send().await.unwrap();
}

#[tokio::test]
async fn instances_register_update_list_and_the_revision_rules() {
    let server = Server::start();
    let client = server.client();
    let ns = http_namespace(&client, "shop").await;
    let svc = custom_health_service(&client, &ns, "user-auth-db").await;
    let id = svc.id().unwrap();

    assert_eq!(revision(&client, "shop", "user-auth-db").await, 0);
    register(
        &client,
        id,
        "user-auth-prod-01",
        &[("tablename", "UserAuth"), ("environment", "prod")],
    )
    .await;
    assert_eq!(revision(&client, "shop", "user-auth-db").await, 1);
    // Re-registering with the same attributes changes nothing.
    register(
        &client,
        id,
        "user-auth-prod-01",
        &[("tablename", "UserAuth"), ("environment", "prod")],
    )
    .await;
    assert_eq!(revision(&client, "shop", "user-auth-db").await, 1);
    // New attributes: same instance, revision grows.
    register(
        &client,
        id,
        "user-auth-prod-01",
        &[("tablename", "UserAuthV2"), ("environment", "prod")],
    )
    .await;
    assert_eq!(revision(&client, "shop", "user-auth-db").await, 2);
    let inst = client
        .get_instance()
        .service_id(id)
        .instance_id("user-auth-prod-01")
        .send()
        .await
        .unwrap();
    assert_eq!(
        inst.instance().unwrap().attributes().unwrap()["tablename"],
        "UserAuthV2"
    );
    assert_eq!(inst.resource_owner(), Some("000000000000"));

    // Health changes are immediate and never move the revision.
    client
        .update_instance_custom_health_status()
        .service_id(id)
        .instance_id("user-auth-prod-01")
        .status(CustomHealthStatus::Unhealthy)
        .send()
        .await
        .unwrap();
    assert_eq!(revision(&client, "shop", "user-auth-db").await, 2);
    let health = client
        .get_instances_health_status()
        .service_id(id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.status().unwrap()["user-auth-prod-01"],
        HealthStatus::Unhealthy
    );

    // AWS_INIT_HEALTH_STATUS.
    register(
        &client,
        id,
        "starts-sick",
        &[("AWS_INIT_HEALTH_STATUS", "UNHEALTHY")],
    )
    .await;
    let health = client
        .get_instances_health_status()
        .service_id(id)
        .instances("starts-sick")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().unwrap().len(), 1);
    assert_eq!(
        health.status().unwrap()["starts-sick"],
        HealthStatus::Unhealthy
    );

    // Pagination across pages of ListInstances and GetInstancesHealthStatus.
    for i in 0..5 {
        register(&client, id, &format!("page-{i}"), &[("tier", "web")]).await;
    }
    let mut seen = HashSet::new();
    let mut token = None;
    loop {
        let page = client
            .list_instances()
            .service_id(id)
            .max_results(2)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        assert!(page.instances().len() <= 2);
        for i in page.instances() {
            assert!(
                seen.insert(i.id().unwrap().to_string()),
                "no duplicates across pages"
            );
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 7);
    let mut statuses = 0;
    let mut token = None;
    loop {
        let page = client
            .get_instances_health_status()
            .service_id(id)
            .max_results(3)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        statuses += page.status().map_or(0, HashMap::len);
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(statuses, 7);
    let svc_now = client.get_service().id(id).send().await.unwrap();
    assert_eq!(svc_now.service().unwrap().instance_count(), Some(7));

    // Deregistering grows the revision; unknown instances are InstanceNotFound.
    let before = revision(&client, "shop", "user-auth-db").await;
    let op = client
        .deregister_instance()
        .service_id(id)
        .instance_id("page-0")
        .send()
        .await
        .unwrap();
    let op = wait_op(&client, op.operation_id().unwrap()).await;
    assert_eq!(op.r#type(), Some(&OperationType::DeregisterInstance));
    assert_eq!(
        op.targets().unwrap()[&OperationTargetType::Instance],
        "page-0"
    );
    assert_eq!(revision(&client, "shop", "user-auth-db").await, before + 1);
    let err = client
        .deregister_instance()
        .service_id(id)
        .instance_id("page-0")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InstanceNotFound");
    let err = client
        .get_instance()
        .service_id(id)
        .instance_id("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InstanceNotFound");

    // Custom health on a service without custom health config.
    let plain = client
        .create_service()
        .name("plain")
        .namespace_id(&ns)
        .send()
        .await
        .unwrap();
    let plain = plain.service().unwrap().id().unwrap();
    register(&client, plain, "x", &[("tier", "web")]).await;
    let err = client
        .update_instance_custom_health_status()
        .service_id(plain)
        .instance_id("x")
        .status(CustomHealthStatus::Healthy)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "CustomHealthNotFound");
}

#[tokio::test]
async fn discover_instances_filters_health_fallbacks_and_limits() {
    let server = Server::start();
    let client = server.client();
    let ns = http_namespace(&client, "disc").await;
    let svc = custom_health_service(&client, &ns, "web").await;
    let id = svc.id().unwrap();
    for i in 0..6 {
        let env = if i < 4 { "prod" } else { "staging" };
        let zone = if i % 2 == 0 { "a" } else { "b" };
        register(
            &client,
            id,
            &format!("web-{i}"),
            &[("environment", env), ("zone", zone)],
        )
        .await;
    }
    for sick in ["web-0", "web-1"] {
        client
            .update_instance_custom_health_status()
            .service_id(id)
            .instance_id(sick)
            .status(CustomHealthStatus::Unhealthy)
            .send()
            .await
            .unwrap();
    }
    let discover = |query: &'static [(&'static str, &'static str)],
                    optional: &'static [(&'static str, &'static str)],
                    health: Option<HealthStatusFilter>| {
        let mut req = client
            .discover_instances()
            .namespace_name("disc")
            .service_name("web")
            .set_health_status(health);
        for (k, v) in query {
            req = req.query_parameters(*k, *v);
        }
        for (k, v) in optional {
            req = req.optional_parameters(*k, *v);
        }
        async move {
            let out = req.send().await.unwrap();
            let mut ids: Vec<String> = out
                .instances()
                .iter()
                .map(|i| i.instance_id().unwrap().to_string())
                .collect();
            ids.sort();
            (ids, out.instances_revision())
        }
    };
    let (all, rev) = discover(
        &[("environment", "prod")],
        &[],
        Some(HealthStatusFilter::All),
    )
    .await;
    assert_eq!(all, ["web-0", "web-1", "web-2", "web-3"]);
    assert_eq!(rev, Some(6));
    let (healthy, _) = discover(
        &[("environment", "prod")],
        &[],
        Some(HealthStatusFilter::Healthy),
    )
    .await;
    assert_eq!(healthy, ["web-2", "web-3"]);
    let (sick, _) = discover(
        &[("environment", "prod")],
        &[],
        Some(HealthStatusFilter::Unhealthy),
    )
    .await;
    assert_eq!(sick, ["web-0", "web-1"]);
    // Optional parameters narrow when they match ...
    let (zone_a, _) = discover(
        &[("environment", "prod")],
        &[("zone", "a")],
        Some(HealthStatusFilter::Healthy),
    )
    .await;
    assert_eq!(zone_a, ["web-2"]);
    // ... and are ignored as a whole when they don't.
    let (fallback, _) = discover(
        &[("environment", "prod")],
        &[("zone", "c")],
        Some(HealthStatusFilter::Healthy),
    )
    .await;
    assert_eq!(fallback, ["web-2", "web-3"]);
    // Fail open when nothing is healthy.
    let (open, _) = discover(
        &[("zone", "a"), ("environment", "prod")],
        &[],
        Some(HealthStatusFilter::HealthyOrElseAll),
    )
    .await;
    assert_eq!(open, ["web-2"]);
    for healthy in ["web-2", "web-3"] {
        client
            .update_instance_custom_health_status()
            .service_id(id)
            .instance_id(healthy)
            .status(CustomHealthStatus::Unhealthy)
            .send()
            .await
            .unwrap();
    }
    let (open, _) = discover(
        &[("environment", "prod")],
        &[],
        Some(HealthStatusFilter::HealthyOrElseAll),
    )
    .await;
    assert_eq!(open, ["web-0", "web-1", "web-2", "web-3"]);

    // The response carries names, health and attributes.
    let out = client
        .discover_instances()
        .namespace_name("disc")
        .service_name("web")
        .query_parameters("environment", "staging")
        .send()
        .await
        .unwrap();
    let first = &out.instances()[0];
    assert_eq!(first.namespace_name(), Some("disc"));
    assert_eq!(first.service_name(), Some("web"));
    assert_eq!(first.health_status(), Some(&HealthStatus::Healthy));
    assert_eq!(first.attributes().unwrap()["environment"], "staging");

    // Services without a health check report UNKNOWN and ignore the filter.
    let plain = client
        .create_service()
        .name("plain")
        .namespace_id(&ns)
        .send()
        .await
        .unwrap();
    let plain = plain.service().unwrap().id().unwrap();
    for i in 0..30 {
        register(&client, plain, &format!("p-{i:02}"), &[("tier", "web")]).await;
    }
    let out = client
        .discover_instances()
        .namespace_name("disc")
        .service_name("plain")
        .health_status(HealthStatusFilter::Unhealthy)
        .max_results(20)
        .send()
        .await
        .unwrap();
    assert_eq!(out.instances().len(), 20, "MaxResults caps the answer");
    assert!(
        out.instances()
            .iter()
            .all(|i| i.health_status() == Some(&HealthStatus::UnknownValue))
    );
    // Random order.
    let mut orders = HashSet::new();
    for _ in 0..10 {
        let out = client
            .discover_instances()
            .namespace_name("disc")
            .service_name("plain")
            .send()
            .await
            .unwrap();
        assert_eq!(out.instances().len(), 30);
        orders.insert(
            out.instances()
                .iter()
                .map(|i| i.instance_id().unwrap().to_string())
                .collect::<Vec<_>>(),
        );
    }
    assert!(orders.len() > 1, "DiscoverInstances randomises the order");

    let err = client
        .discover_instances()
        .namespace_name("nope")
        .service_name("web")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NamespaceNotFound");
    let err = client
        .discover_instances()
        .namespace_name("disc")
        .service_name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ServiceNotFound");
}

#[tokio::test]
async fn operations_are_listed_with_filters_and_pages() {
    let server = Server::start();
    let client = server.client();
    let ns = http_namespace(&client, "ops").await;
    let svc = client
        .create_service()
        .name("s")
        .namespace_id(&ns)
        .send()
        .await
        .unwrap();
    let svc = svc.service().unwrap().id().unwrap();
    for i in 0..3 {
        register(&client, svc, &format!("i{i}"), &[("tier", "web")]).await;
    }
    let filter = |name, condition, values: &[&str]| {
        let mut b = OperationFilter::builder().name(name).condition(condition);
        for v in values {
            b = b.values(*v);
        }
        b.build().unwrap()
    };
    let registers = client
        .list_operations()
        .filters(filter(
            OperationFilterName::Type,
            FilterCondition::Eq,
            &["REGISTER_INSTANCE"],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(registers.operations().len(), 3);
    assert!(
        registers
            .operations()
            .iter()
            .all(|o| o.status() == Some(&OperationStatus::Success))
    );
    let by_service = client
        .list_operations()
        .filters(filter(
            OperationFilterName::ServiceId,
            FilterCondition::Eq,
            &[svc],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(by_service.operations().len(), 3);
    let by_ns = client
        .list_operations()
        .filters(filter(
            OperationFilterName::NamespaceId,
            FilterCondition::Eq,
            &[&ns],
        ))
        .filters(filter(
            OperationFilterName::Status,
            FilterCondition::In,
            &["SUCCESS", "FAIL"],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(by_ns.operations().len(), 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let recent = client
        .list_operations()
        .filters(filter(
            OperationFilterName::UpdateDate,
            FilterCondition::Between,
            &[&(now - 600).to_string(), &(now + 600).to_string()],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(recent.operations().len(), 4);
    let old = client
        .list_operations()
        .filters(filter(
            OperationFilterName::UpdateDate,
            FilterCondition::Between,
            &["0", "1000"],
        ))
        .send()
        .await
        .unwrap();
    assert!(old.operations().is_empty());

    let mut total = 0;
    let mut token = None;
    loop {
        let page = client
            .list_operations()
            .max_results(3)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        total += page.operations().len();
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(total, 4);
    let err = client
        .get_operation()
        .operation_id("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "OperationNotFound");
}

#[tokio::test]
async fn tags_on_namespaces_and_services() {
    let server = Server::start();
    let client = server.client();
    let ns = http_namespace(&client, "tags").await;
    let arn = client
        .get_namespace()
        .id(&ns)
        .send()
        .await
        .unwrap()
        .namespace()
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build().unwrap();
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags(tag("team", "a"))
        .tags(tag("env", "prod"))
        .send()
        .await
        .unwrap();
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags(tag("team", "b"))
        .send()
        .await
        .unwrap();
    client
        .untag_resource()
        .resource_arn(&arn)
        .tag_keys("env")
        .send()
        .await
        .unwrap();
    let tags = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags(), [tag("team", "b")]);

    let mut many = client.tag_resource().resource_arn(&arn);
    for i in 0..50 {
        many = many.tags(tag(&format!("k{i}"), "v"));
    }
    assert_eq!(
        code(&many.send().await.unwrap_err()),
        "TooManyTagsException"
    );
    let missing = arn.replace(&ns, "ns-aaaaaaaaaaaaaaaa");
    let err = client
        .list_tags_for_resource()
        .resource_arn(&missing)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ResourceNotFoundException");

    let svc = client
        .create_service()
        .name("tagged")
        .namespace_id(&ns)
        .tags(tag("cost-center", "42"))
        .send()
        .await
        .unwrap();
    let svc_arn = svc.service().unwrap().arn().unwrap();
    let tags = client
        .list_tags_for_resource()
        .resource_arn(svc_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags(), [tag("cost-center", "42")]);
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut server = Server::start();
    let client = server.client();
    let ns = private_namespace(&client, "persist.local").await;
    let svc = custom_health_service(&client, &ns, "db").await;
    let id = svc.id().unwrap().to_string();
    register(&client, &id, "a", &[("k", "1")]).await;
    register(&client, &id, "b", &[("k", "2")]).await;
    register(&client, &id, "a", &[("k", "3")]).await;
    client
        .update_instance_custom_health_status()
        .service_id(&id)
        .instance_id("b")
        .status(CustomHealthStatus::Unhealthy)
        .send()
        .await
        .unwrap();
    client
        .update_service_attributes()
        .service_id(&id)
        .attributes("owner", "me")
        .send()
        .await
        .unwrap();
    let ops_before = client
        .list_operations()
        .send()
        .await
        .unwrap()
        .operations()
        .to_vec();
    let ns_before = client
        .get_namespace()
        .id(&ns)
        .send()
        .await
        .unwrap()
        .namespace()
        .cloned();
    let svc_before = client
        .get_service()
        .id(&id)
        .send()
        .await
        .unwrap()
        .service()
        .cloned();

    server.restart();
    let client = server.client();
    assert_eq!(
        client
            .get_namespace()
            .id(&ns)
            .send()
            .await
            .unwrap()
            .namespace()
            .cloned(),
        ns_before
    );
    assert_eq!(
        client
            .get_service()
            .id(&id)
            .send()
            .await
            .unwrap()
            .service()
            .cloned(),
        svc_before
    );
    assert_eq!(revision(&client, "persist.local", "db").await, 3);
    let health = client
        .get_instances_health_status()
        .service_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().unwrap()["b"], HealthStatus::Unhealthy);
    assert_eq!(health.status().unwrap()["a"], HealthStatus::Healthy);
    let a = client
        .get_instance()
        .service_id(&id)
        .instance_id("a")
        .send()
        .await
        .unwrap();
    assert_eq!(a.instance().unwrap().attributes().unwrap()["k"], "3");
    let mut ops_after = client
        .list_operations()
        .send()
        .await
        .unwrap()
        .operations()
        .to_vec();
    let mut ops_before = ops_before;
    ops_before.sort_by(|a, b| a.id().cmp(&b.id()));
    ops_after.sort_by(|a, b| a.id().cmp(&b.id()));
    assert_eq!(ops_before, ops_after);
    let attrs = client
        .get_service_attributes()
        .service_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        attrs.service_attributes().unwrap().attributes().unwrap()["owner"],
        "me"
    );
    // The revision keeps growing from where it was.
    register(&client, &id, "c", &[("tier", "web")]).await;
    assert_eq!(revision(&client, "persist.local", "db").await, 4);
}

#[tokio::test]
async fn controller_managed_resources_cannot_be_changed_through_the_api() {
    use waymark::registry::model::{NamespaceType, Owner, TargetType};
    use waymark::registry::{
        CreateNamespace, CreateService, RedbStore, RegisterInstance, Registry, RegistryConfig,
    };

    // Prepare a data directory the way the controller would have left it.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let owner = Owner::Controller {
        cluster: "prod-eu".into(),
        object: "ServiceDiscovery shop/inventory-manager".into(),
    };
    let svc_id = {
        let reg = Registry::open(
            Box::new(RedbStore::open(&data).unwrap()),
            RegistryConfig::default(),
        )
        .unwrap();
        let op = reg
            .create_namespace(CreateNamespace {
                name: "owned".into(),
                kind: NamespaceType::Http,
                description: None,
                soa_ttl: None,
                vpc: None,
                creator_request_id: None,
                tags: vec![],
                owner: owner.clone(),
            })
            .unwrap();
        let svc = reg
            .create_service(CreateService {
                name: "inventory-manager".into(),
                namespace_id: op.targets[&TargetType::Namespace].clone(),
                description: None,
                dns_config: None,
                health_check_config: None,
                health_check_custom_config: None,
                http_only: false,
                creator_request_id: None,
                tags: vec![],
                owner: owner.clone(),
            })
            .unwrap();
        reg.register_instance(RegisterInstance {
            service_id: svc.id.clone(),
            instance_id: "inventory-manager-7d9f-abcde".into(),
            attributes: [("AWS_INSTANCE_IPV4".to_string(), "10.1.2.3".to_string())].into(),
            creator_request_id: None,
            owner: owner.clone(),
        })
        .unwrap();
        svc.id
    };
    let server = Server::start_on(dir, data);
    let client = server.client();
    let err = client
        .deregister_instance()
        .service_id(&svc_id)
        .instance_id("inventory-manager-7d9f-abcde")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ResourceInUse");
    assert!(
        err.message()
            .unwrap_or_default()
            .contains("ServiceDiscovery shop/inventory-manager"),
        "{:?}",
        err.message()
    );
    let err = client
        .register_instance()
        .service_id(&svc_id)
        .instance_id("inventory-manager-7d9f-abcde")
        .attributes("AWS_INSTANCE_IPV4", "10.9.9.9")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ResourceInUse");
    assert_eq!(
        code(
            &client
                .delete_service()
                .id(&svc_id)
                .send()
                .await
                .unwrap_err()
        ),
        "ResourceInUse"
    );
    // Reading is fine, and API instances may still be added beside the pods.
    let out = client
        .discover_instances()
        .namespace_name("owned")
        .service_name("inventory-manager")
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.instances()[0].attributes().unwrap()["AWS_INSTANCE_IPV4"],
        "10.1.2.3"
    );
    register(&client, &svc_id, "manual-entry", &[("tier", "web")]).await;
}
