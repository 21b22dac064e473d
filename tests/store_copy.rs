//! `waymark store copy`: an embedded registry (namespaces, services,
//! instances, tags, service attributes, custom health, operation records)
//! moved into a real etcd and back, and served identically through the
//! official AWS SDK each time; a non-empty target is refused unless told.

#[path = "api/harness.rs"]
mod harness;

use std::process::Command;

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::types::{
    CustomHealthStatus, DnsConfig, DnsRecord, HealthCheckCustomConfig, HealthStatusFilter,
    RecordType, Tag,
};
use harness::support::etcd::Etcd;
use harness::support::{BIN, Options, Server};
use harness::{SdkClient, http_namespace, private_namespace};

/// Everything the API says about the registry, in a comparable form.
async fn view(c: &Client) -> String {
    let mut out = Vec::new();
    let namespaces = c.list_namespaces().send().await.unwrap();
    let mut namespaces: Vec<_> = namespaces.namespaces().to_vec();
    namespaces.sort_by_key(|n| n.id().unwrap().to_string());
    for n in &namespaces {
        let got = c.get_namespace().id(n.id().unwrap()).send().await.unwrap();
        out.push(format!("{:?}", got.namespace().unwrap()));
        let tags = c
            .list_tags_for_resource()
            .resource_arn(n.arn().unwrap())
            .send()
            .await
            .unwrap();
        out.push(format!("tags {:?}", tags.tags()));
    }
    let services = c.list_services().send().await.unwrap();
    let mut services: Vec<_> = services.services().to_vec();
    services.sort_by_key(|s| s.id().unwrap().to_string());
    for s in &services {
        let id = s.id().unwrap();
        let full = c.get_service().id(id).send().await.unwrap();
        let namespace_id = full.service().unwrap().namespace_id().unwrap().to_string();
        out.push(format!("{:?}", full.service()));
        let attrs = c
            .get_service_attributes()
            .service_id(id)
            .send()
            .await
            .unwrap();
        out.push(format!("{:?}", attrs.service_attributes()));
        let tags = c
            .list_tags_for_resource()
            .resource_arn(s.arn().unwrap())
            .send()
            .await
            .unwrap();
        out.push(format!("tags {:?}", tags.tags()));
        let ns = namespaces
            .iter()
            .find(|n| n.id() == Some(namespace_id.as_str()))
            .unwrap();
        let found = c
            .discover_instances()
            .namespace_name(
                ns.properties()
                    .unwrap()
                    .http_properties()
                    .unwrap()
                    .http_name()
                    .unwrap(),
            )
            .service_name(s.name().unwrap())
            .health_status(HealthStatusFilter::All)
            .send()
            .await
            .unwrap();
        let mut instances: Vec<String> = found
            .instances()
            .iter()
            .map(|i| {
                let mut attrs: Vec<_> = i.attributes().unwrap().iter().collect();
                attrs.sort();
                format!(
                    "{} {:?} {attrs:?}",
                    i.instance_id().unwrap(),
                    i.health_status()
                )
            })
            .collect();
        instances.sort();
        out.push(format!(
            "revision {:?} {instances:?}",
            found.instances_revision()
        ));
    }
    let mut ops: Vec<String> = Vec::new();
    let mut pages = c.list_operations().into_paginator().send();
    while let Some(page) = pages.next().await {
        for op in page.unwrap().operations() {
            let full = c
                .get_operation()
                .operation_id(op.id().unwrap())
                .send()
                .await
                .unwrap();
            let op = full.operation().unwrap();
            // Targets are a map the SDK keeps in no particular order.
            let mut targets: Vec<_> = op.targets().unwrap().iter().collect();
            targets.sort_by_key(|(t, _)| t.as_str().to_string());
            ops.push(format!(
                "{:?} {:?} {:?} {:?} {:?} {targets:?}",
                op.id(),
                op.r#type(),
                op.status(),
                op.create_date(),
                op.update_date()
            ));
        }
    }
    ops.sort();
    out.extend(ops);
    out.join("\n")
}

/// A registry with a bit of everything, built through the API.
async fn seed(c: &Client) {
    let http = http_namespace(c, "copy.example").await;
    c.tag_resource()
        .resource_arn(
            c.get_namespace()
                .id(&http)
                .send()
                .await
                .unwrap()
                .namespace()
                .unwrap()
                .arn()
                .unwrap(),
        )
        .tags(
            Tag::builder()
                .key("team")
                .value("payments")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let dns = private_namespace(c, "copy.local").await;
    let api = c
        .create_service()
        .name("api")
        .namespace_id(&http)
        .health_check_custom_config(HealthCheckCustomConfig::builder().build())
        .tags(Tag::builder().key("tier").value("front").build().unwrap())
        .send()
        .await
        .unwrap()
        .service()
        .unwrap()
        .id()
        .unwrap()
        .to_string();
    let db = c
        .create_service()
        .name("db")
        .namespace_id(&dns)
        .dns_config(
            DnsConfig::builder()
                .dns_records(
                    DnsRecord::builder()
                        .r#type(RecordType::A)
                        .ttl(30)
                        .build()
                        .unwrap(),
                )
                .dns_records(
                    DnsRecord::builder()
                        .r#type(RecordType::Srv)
                        .ttl(30)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .service()
        .unwrap()
        .id()
        .unwrap()
        .to_string();
    c.update_service_attributes()
        .service_id(&api)
        .attributes("owner", "payments")
        .send()
        .await
        .unwrap();
    for i in 0..5 {
        c.register_instance()
            .service_id(&api)
            .instance_id(format!("api-{i}"))
            .attributes("version", format!("v{i}"))
            .send()
            .await
            .unwrap();
        c.register_instance()
            .service_id(&db)
            .instance_id(format!("db-{i}"))
            .attributes("AWS_INSTANCE_IPV4", format!("10.0.0.{i}"))
            .attributes("AWS_INSTANCE_PORT", "5432")
            .send()
            .await
            .unwrap();
    }
    c.deregister_instance()
        .service_id(&db)
        .instance_id("db-4")
        .send()
        .await
        .unwrap();
    c.update_instance_custom_health_status()
        .service_id(&api)
        .instance_id("api-2")
        .status(CustomHealthStatus::Unhealthy)
        .send()
        .await
        .unwrap();
}

/// Runs `waymark store copy` with these arguments.
fn copy(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["store", "copy"])
        .args(args)
        .args(["--log", "warn"])
        .output()
        .unwrap()
}

fn on(url: &str) -> Server {
    Server::start_with(Options {
        args: vec!["--store".into(), url.into()],
        ..Options::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_registry_moves_to_etcd_and_back_unchanged() {
    let mut embedded = Server::start();
    seed(&embedded.client()).await;
    let original = view(&embedded.client()).await;
    assert!(
        original.contains("api-2") && original.contains("team"),
        "{original}"
    );
    embedded.kill();
    let data = embedded.data_dir.to_str().unwrap().to_string();

    let etcd = Etcd::start();
    let url = etcd.url();
    let out = copy(&["--from", &data, "--to", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("2 namespaces, 2 services, 9 instances"),
        "{summary}"
    );
    // Not a terminal: progress as plain lines, ending with the total.
    let progress = String::from_utf8_lossy(&out.stderr);
    let last = progress
        .lines()
        .rfind(|l| l.starts_with("copying records: "))
        .unwrap_or_else(|| panic!("no progress lines: {progress}"));
    let (done, total) = last["copying records: ".len()..].split_once('/').unwrap();
    assert_eq!(done, total, "{progress}");
    {
        let shared = on(&url);
        assert_eq!(view(&shared.client()).await, original);
    }

    // A non-empty target is refused, and nothing changes.
    let out = copy(&["--from", &data, "--to", &url]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not empty") && err.contains("--replace"),
        "{err}"
    );
    let out = copy(&["--from", &data, "--to", &url, "--replace"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed"));

    // And back, into a fresh data directory.
    let dir = tempfile::tempdir().unwrap();
    let back = dir.path().join("data");
    let out = copy(&["--from", &url, "--to", back.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = Server::start_on(dir, back);
    assert_eq!(view(&restored.client()).await, original);

    // A source that holds no registry is refused.
    let out = copy(&["--from", "/nonexistent/waymark", "--to", &url, "--replace"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no registry.redb"));
}
