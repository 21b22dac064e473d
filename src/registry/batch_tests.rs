//! Group commit: which plans share a commit, which are planned again, and
//! that concurrent writers lose nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::registry::model::{Instance, NamespaceType, Owner, Tag};
use crate::registry::store::{Commit, Committed, Snapshot, Store, StoreResult};
use crate::registry::tests::{a_records, create_ns, create_svc};
use crate::registry::{RegisterInstance, Registry, RegistryConfig, now_millis};

fn registry_with(store: Box<dyn Store>) -> (Registry, String, Vec<String>) {
    let reg = Registry::open(store, RegistryConfig::default()).unwrap();
    let ns = create_ns(&reg, "batch.local", NamespaceType::DnsPrivate);
    let services = ["a", "b"]
        .iter()
        .map(|name| create_svc(&reg, &ns, name, a_records(), false).id)
        .collect();
    (reg, ns, services)
}

fn registry() -> (Registry, String, Vec<String>) {
    registry_with(Box::new(crate::registry::MemoryStore))
}

fn instance(service: &str, id: &str) -> Instance {
    let now = now_millis();
    Instance {
        id: id.into(),
        service_id: service.into(),
        attributes: [("AWS_INSTANCE_IPV4".to_string(), "10.0.0.1".to_string())]
            .into_iter()
            .collect(),
        creator_request_id: None,
        health: crate::registry::model::HealthStatus::Unknown,
        reported: None,
        probe: None,
        owner: Arc::new(Owner::Api),
        create_date: now,
        update_date: now,
        health_since: now,
    }
}

/// What a registration plans: the instance and the revision bump.
fn registration(index: &Index, service: &str, id: &str) -> Submission {
    let mut svc = index.service(service).unwrap().service.clone();
    svc.revision += 1;
    Submission::new(
        index,
        vec![
            Change::PutInstance(instance(service, id)),
            Change::PutService(svc),
        ],
        &[],
    )
}

fn retagged(index: &Index, service: &str, tag: &str) -> Submission {
    let mut svc = index.service(service).unwrap().service.clone();
    svc.tags = vec![Tag {
        key: tag.into(),
        value: "v".into(),
    }];
    Submission::new(index, vec![Change::PutService(svc)], &[])
}

fn services_written(changes: &[Change]) -> Vec<(String, u64, usize)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::PutService(s) => Some((s.id.clone(), s.revision, s.tags.len())),
            _ => None,
        })
        .collect()
}

#[test]
fn registrations_into_one_service_share_a_commit_and_one_revision_write() {
    let (reg, _, svcs) = registry();
    let index = reg.read();
    let rev = index.service(&svcs[0]).unwrap().service.revision;
    let batch = vec![
        (1, registration(&index, &svcs[0], "i1")),
        (2, registration(&index, &svcs[0], "i2")),
        (3, registration(&index, &svcs[1], "i3")),
    ];
    let m = merge(&History::default(), &index, &batch, 1000);
    assert_eq!(m.accepted, [1, 2, 3]);
    assert!(m.deferred.is_empty());
    let mut written = services_written(&m.changes);
    written.sort();
    let mut want = vec![(svcs[0].clone(), rev + 2, 0), (svcs[1].clone(), rev + 1, 0)];
    want.sort();
    assert_eq!(written, want, "one record per service, every bump counted");
    assert_eq!(m.changes.len(), 5, "three instances, two service records");
}

#[test]
fn two_writes_of_one_instance_do_not_share_a_commit() {
    let (reg, _, svcs) = registry();
    let index = reg.read();
    let batch = vec![
        (1, registration(&index, &svcs[0], "same")),
        (2, registration(&index, &svcs[0], "same")),
        (3, registration(&index, &svcs[0], "other")),
    ];
    let m = merge(&History::default(), &index, &batch, 1000);
    assert_eq!(m.accepted, [1, 3]);
    assert_eq!(m.deferred, [2]);
}

#[test]
fn a_settings_change_keeps_the_bumps_before_it_and_defers_the_writes_after() {
    let (reg, _, svcs) = registry();
    let index = reg.read();
    let rev = index.service(&svcs[0]).unwrap().service.revision;
    let batch = vec![
        (1, registration(&index, &svcs[0], "i1")),
        (2, retagged(&index, &svcs[0], "t")),
        // Planned on the record before the new settings: planned again.
        (3, registration(&index, &svcs[0], "i2")),
        (4, retagged(&index, &svcs[0], "u")),
    ];
    let m = merge(&History::default(), &index, &batch, 1000);
    assert_eq!(m.accepted, [1, 2]);
    assert_eq!(m.deferred, [3, 4]);
    assert_eq!(
        services_written(&m.changes),
        [(svcs[0].clone(), rev + 1, 1)],
        "the new settings with the revision bumped once"
    );
}

#[test]
fn creations_and_deletions_are_serialised() {
    let (reg, ns, svcs) = registry();
    let index = reg.read();
    let new_service = |id: &str, name: &str| {
        let mut s = index.service(&svcs[0]).unwrap().service.clone();
        s.id = id.into();
        s.name = name.into();
        s.namespace_id = ns.clone();
        s.revision = 0;
        Submission::new(&index, vec![Change::PutService(s)], &[])
    };
    let delete = Submission::new(&index, vec![Change::DeleteService(svcs[1].clone())], &[]);
    let batch = vec![
        (1, new_service("srv-x", "x")),
        (2, new_service("srv-y", "x")),
        (3, delete),
        (4, registration(&index, &svcs[0], "i1")),
    ];
    let m = merge(&History::default(), &index, &batch, 1000);
    assert_eq!(m.accepted, [1, 4], "one structural write per commit");
    assert_eq!(m.deferred, [2, 3]);
    // A registration into a service being deleted waits for the deletion.
    let batch = vec![
        (
            1,
            Submission::new(&index, vec![Change::DeleteService(svcs[1].clone())], &[]),
        ),
        (2, registration(&index, &svcs[1], "late")),
    ];
    let m = merge(&History::default(), &index, &batch, 1000);
    assert_eq!((m.accepted, m.deferred), (vec![1], vec![2]));
}

#[test]
fn plans_older_than_a_write_they_read_are_planned_again() {
    let (reg, _, svcs) = registry();
    let index = reg.read();
    let version = index.version();
    let stale = registration(&index, &svcs[0], "i1");
    let fine = registration(&index, &svcs[1], "i2");
    // A full sync removes what it does not want: it read every instance.
    let full_sync = |svc: &str| {
        Submission::new(
            &index,
            vec![Change::DeleteInstance {
                service_id: svc.into(),
                instance_id: "gone".into(),
            }],
            &[Key::Instances(svc.into())],
        )
    };
    let mut history = History::default();
    // Someone wrote instance i1 of service a after these were planned.
    let mut written = std::collections::HashSet::new();
    written.insert(Key::Instance(svcs[0].clone(), "i1".into()));
    written.insert(Key::Instances(svcs[0].clone()));
    history.record(version + 1, Written::Keys(written));
    let mut later = index.clone();
    later.advance();
    let m = merge(
        &history,
        &later,
        &[
            (1, stale),
            (2, full_sync(&svcs[1])),
            (3, fine),
            (4, full_sync(&svcs[0])),
            // Planned on b's instances before 3 added one.
            (5, full_sync(&svcs[1])),
        ],
        1000,
    );
    assert_eq!(m.accepted, [2, 3]);
    assert_eq!(m.deferred, [1, 4, 5]);
    // A reload, or a history that no longer reaches back, stales everything.
    history.record(version + 2, Written::Everything);
    later.advance();
    let m = merge(
        &history,
        &later,
        &[(1, registration(&index, &svcs[1], "x"))],
        1000,
    );
    assert_eq!(m.deferred, [1]);
    let mut old = History::default();
    old.record(version + 5, Written::Keys(Default::default()));
    let m = merge(
        &old,
        &later,
        &[(1, registration(&index, &svcs[1], "x"))],
        1000,
    );
    assert_eq!(m.deferred, [1]);
}

#[test]
fn a_batch_never_takes_a_service_past_its_instance_limit() {
    let (reg, _, svcs) = registry();
    let index = reg.read();
    let batch = vec![
        (1, registration(&index, &svcs[0], "i1")),
        (2, registration(&index, &svcs[0], "i2")),
        (3, registration(&index, &svcs[1], "i3")),
    ];
    let m = merge(&History::default(), &index, &batch, 1);
    assert_eq!(m.accepted, [1, 3]);
    assert_eq!(m.deferred, [2], "planned again, it meets the limit itself");
}

/// A store whose first commit waits until the test lets it go, counting
/// commits and the changes in each.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    commits: AtomicUsize,
}

impl Store for Arc<Gate> {
    fn load(&self) -> StoreResult<Snapshot> {
        Ok(Snapshot::default())
    }

    fn commit(&self, _commit: Commit<'_>) -> StoreResult<Committed> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        Ok(Committed::default())
    }

    fn describe(&self) -> String {
        "gate".into()
    }
}

#[test]
fn writes_that_arrive_during_a_commit_go_together_in_the_next() {
    let gate = Arc::new(Gate::default());
    *gate.open.lock().unwrap() = true;
    let (reg, _, svcs) = registry_with(Box::new(gate.clone()));
    *gate.open.lock().unwrap() = false;
    let before = gate.commits.load(Ordering::SeqCst);
    let rev = reg.read().service(&svcs[0]).unwrap().service.revision;
    let reg = Arc::new(reg);
    let register = |id: String| {
        let reg = Arc::clone(&reg);
        let svc = svcs[0].clone();
        std::thread::spawn(move || {
            reg.register_instance(RegisterInstance {
                service_id: svc,
                instance_id: id,
                attributes: [("AWS_INSTANCE_IPV4".to_string(), "10.0.0.2".to_string())]
                    .into_iter()
                    .collect(),
                creator_request_id: None,
                owner: Owner::Api,
            })
            .unwrap()
        })
    };
    let first = register("first".into());
    wait_for(|| gate.commits.load(Ordering::SeqCst) == before + 1);
    let rest: Vec<_> = (0..7).map(|n| register(format!("i{n}"))).collect();
    wait_for(|| super::lock(&reg.pipeline.queue).waiting.len() == 7);
    *gate.open.lock().unwrap() = true;
    gate.opened.notify_all();
    first.join().unwrap();
    for r in rest {
        r.join().unwrap();
    }
    assert_eq!(
        gate.commits.load(Ordering::SeqCst),
        before + 2,
        "the seven queued writes went in one commit"
    );
    let index = reg.read();
    let entry = index.service(&svcs[0]).unwrap();
    assert_eq!(entry.instances.len(), 8);
    assert_eq!(
        entry.service.revision,
        rev + 8,
        "every registration counted"
    );
}

fn wait_for(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn concurrent_writers_lose_nothing_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::registry::RedbStore::open(dir.path()).unwrap();
    let (reg, _, svcs) = registry_with(Box::new(store));
    let reg = Arc::new(reg);
    let revs: Vec<u64> = svcs
        .iter()
        .map(|s| reg.read().service(s).unwrap().service.revision)
        .collect();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let reg = Arc::clone(&reg);
            let svcs = svcs.clone();
            std::thread::spawn(move || {
                for n in 0..40 {
                    let svc = &svcs[n % 2];
                    let id = format!("t{t}-{n}");
                    reg.register_instance(RegisterInstance {
                        service_id: svc.clone(),
                        instance_id: id.clone(),
                        attributes: [("AWS_INSTANCE_IPV4".to_string(), "10.0.0.3".to_string())]
                            .into_iter()
                            .collect(),
                        creator_request_id: None,
                        owner: Owner::Api,
                    })
                    .unwrap();
                    if n % 4 == 0 {
                        reg.deregister_instance(svc, &id, &Owner::Api).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let check = |reg: &Registry| {
        let index = reg.read();
        for (i, svc) in svcs.iter().enumerate() {
            let entry = index.service(svc).unwrap();
            // Each thread registers 20 into each service and deregisters
            // 10 of those in the first (every fourth n is even).
            let deregistered = if i == 0 { 8 * 10 } else { 0 };
            assert_eq!(entry.instances.len(), 8 * 20 - deregistered, "{svc}");
            assert_eq!(
                entry.service.revision,
                revs[i] + 8 * 20 + deregistered as u64,
                "{svc}"
            );
        }
    };
    check(&reg);
    let operations = reg.read().operation_count();
    drop(reg);
    // What was acknowledged is what the store holds.
    let reopened = Registry::open(
        Box::new(crate::registry::RedbStore::open(dir.path()).unwrap()),
        RegistryConfig::default(),
    )
    .unwrap();
    check(&reopened);
    assert_eq!(reopened.read().operation_count(), operations);
}

#[test]
fn another_replicas_revision_bump_leaves_plans_on_that_service_valid() {
    let (reg, _, svcs) = registry();
    let index = reg.read();
    let mine = registration(&index, &svcs[0], "mine");
    let mut bumped = index.service(&svcs[0]).unwrap().service.clone();
    bumped.revision += 1;
    let remote = vec![
        Change::PutInstance(instance(&svcs[0], "theirs")),
        Change::PutService(bumped.clone()),
    ];
    let mut history = History::default();
    history.record(index.version() + 1, written_by(&index, &remote));
    let mut later = index.clone();
    for c in remote {
        later.apply(c);
    }
    later.advance();
    let m = merge(&history, &later, &[(1, mine)], 1000);
    assert_eq!(m.accepted, [1]);
    assert_eq!(
        services_written(&m.changes),
        [(svcs[0].clone(), bumped.revision + 1, 0)],
        "merged on top of their bump"
    );
    // A settings change over there is a write of the record.
    bumped.description = Some("changed".into());
    let Written::Keys(keys) = written_by(&index, &[Change::PutService(bumped)]) else {
        panic!("keys expected");
    };
    assert!(keys.contains(&Key::Service(svcs[0].clone())));
}
