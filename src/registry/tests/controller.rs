//! The controller's write path and health: syncs, probe verdicts, readiness.

use super::*;

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

/// A store that keeps nothing but, like etcd, takes at most `max` changes in
/// one commit, and counts the commits (shared with the test).
struct SmallCommits {
    max: usize,
    commits: std::sync::atomic::AtomicUsize,
}

impl Store for Arc<SmallCommits> {
    fn load(&self) -> crate::registry::store::StoreResult<Snapshot> {
        Ok(Snapshot::default())
    }

    fn commit(
        &self,
        commit: Commit<'_>,
    ) -> crate::registry::store::StoreResult<crate::registry::store::Committed> {
        assert!(
            commit.changes.len() <= self.max,
            "a commit of {} changes, more than {}",
            commit.changes.len(),
            self.max
        );
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Default::default())
    }

    fn max_changes(&self) -> Option<usize> {
        Some(self.max)
    }

    fn describe(&self) -> String {
        "small commits".into()
    }
}

#[test]
fn syncs_larger_than_the_store_takes_go_in_complete_rounds() {
    let store = Arc::new(SmallCommits {
        max: 8,
        commits: Default::default(),
    });
    let reg = Registry::open(Box::new(store.clone()), RegistryConfig::default()).unwrap();
    let ns = create_ns(&reg, "rounds.local", NamespaceType::DnsPrivate);
    let svc = create_svc(&reg, &ns, "big", a_records(), false);
    let me = controller("ServiceDiscovery shop/big");
    let want = |n: usize| DesiredInstance {
        id: format!("pod-{n:02}"),
        attributes: attrs(&[(AWS_INSTANCE_IPV4, &format!("10.0.0.{n}"))]),
        health: Some(HealthStatus::Healthy),
    };
    let mut desired: Vec<_> = (0..50).map(want).collect();
    desired.push(DesiredInstance {
        id: "bad".into(),
        attributes: attrs(&[("no-ip", "x")]),
        health: None,
    });
    let before = store.commits.load(std::sync::atomic::Ordering::Relaxed);
    let out = reg.sync_instances(&svc.id, desired, &me).unwrap();
    let rounds = store.commits.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert_eq!(out.registered, 50);
    assert_eq!(out.rejected.len(), 1, "reported once: {:?}", out.rejected);
    assert!(rounds >= 50 / 7, "{rounds} commits");
    let entry = reg.read().service(&svc.id).unwrap().clone();
    assert_eq!(entry.instances.len(), 50);
    assert_eq!(entry.service.revision, 50, "one bump per registration");

    // Shrinking to ten: 40 removals, again in rounds, and only then done.
    let out = reg
        .sync_instances(&svc.id, (0..10).map(want).collect(), &me)
        .unwrap();
    assert_eq!(out.deregistered, 40);
    assert_eq!(reg.read().service(&svc.id).unwrap().instances.len(), 10);

    // Partial syncs of several services in one batch, split to fit.
    let other = create_svc(&reg, &ns, "other", a_records(), false);
    let results = reg
        .sync_partial(vec![
            PartialSync {
                service_id: svc.id.clone(),
                owner: me.clone(),
                upserts: (10..30).map(want).collect(),
                removals: vec!["pod-00".into()],
            },
            PartialSync {
                service_id: other.id.clone(),
                owner: me.clone(),
                upserts: (0..12).map(want).collect(),
                removals: vec![],
            },
            PartialSync {
                service_id: "srv-gone".into(),
                owner: me.clone(),
                upserts: vec![want(1)],
                removals: vec![],
            },
        ])
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().registered, 20);
    assert_eq!(results[0].as_ref().unwrap().deregistered, 1);
    assert_eq!(results[1].as_ref().unwrap().registered, 12);
    assert!(matches!(results[2], Err(Error::ServiceNotFound(_))));
    let index = reg.read();
    assert_eq!(index.service(&svc.id).unwrap().instances.len(), 29);
    assert_eq!(index.service(&other.id).unwrap().instances.len(), 12);
}
