//! Restarts on the redb store: the same registry back, bad directories refused.

use std::sync::Arc;

use super::*;

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
    std::fs::write(
        corrupt.join(crate::registry::store::DB_FILE),
        vec![0x42; 4096],
    )
    .unwrap();
    let err = RedbStore::open(&corrupt).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(
        std::fs::read(corrupt.join(crate::registry::store::DB_FILE)).unwrap(),
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
