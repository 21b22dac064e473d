//! `waymark run` on a registry in etcd: several replicas of one cluster
//! (the leader alone reconciles; every replica serves), and two clusters
//! sharing one registry (each owns and collects only its own instances).

use std::time::Duration;

use serde_json::json;

use super::common::second_control_plane;
use super::support::etcd::Etcd;
use super::support::{free_port, http_get};
use super::{Setup, World, cp, eventually};

/// A world on the registry in `etcd`, in the cluster `cluster` names.
fn on_etcd(prefix: &str, etcd: &Etcd, cluster: &'static str, registry_ns: Option<String>) -> World {
    let cp = match cluster {
        "west" => {
            let cp = second_control_plane();
            cp.install_crds();
            cp
        }
        _ => cp(),
    };
    World::with(
        prefix,
        "Http",
        Setup {
            cp,
            cluster_id: cluster,
            store: Some(etcd.url()),
            registry_ns,
            extra_args: Vec::new(),
        },
    )
}

/// The sum of a counter over all its label sets, as served on `metrics_port`.
fn counter_sum(metrics_port: u16, name: &str) -> f64 {
    let (_, body) = http_get(metrics_port, "/metrics").expect("metrics");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The id of service `name`, as the replica serving the API on `port` lists it.
fn service_id_on(port: u16, name: &str) -> Option<String> {
    let listed = World::api_on(port, "ListServices", json!({}));
    listed["Services"]
        .as_array()?
        .iter()
        .find(|s| s["Name"] == name)
        .map(|s| s["Id"].as_str().unwrap().to_string())
}

#[test]
fn replicas_on_etcd_serve_one_registry_and_only_the_leader_reconciles() {
    let etcd = Etcd::start();
    let mut w = on_etcd("etcd-ha", &etcd, "east", None);
    w.discovery("web", "  selector: {matchLabels: {app: web}}");
    w.pod("web-1", "app: web");
    w.pod_status("web-1", &["10.31.0.1"], true);
    w.expect("web", &[("web-1", "HEALTHY")]);
    let leader_service = eventually("the service", || service_id_on(w.api_port, "web"));

    // A second replica on the same etcd: the same registry, served at once.
    let dir = tempfile::tempdir().unwrap();
    let (api2, metrics2, dns2) = (free_port(), free_port(), free_port());
    let mut standby = w.spawn_run(&dir.path().join("data"), api2, metrics2, dns2);
    eventually("the standby ready", || {
        http_get(metrics2, "/readyz").filter(|(status, _)| *status == 200)
    });
    assert_eq!(
        service_id_on(api2, "web").as_deref(),
        Some(leader_service.as_str())
    );
    w.expect_on(api2, "web", &[("web-1", "HEALTHY")]);

    // A change reaches both replicas' answers; only the leader wrote it.
    w.pod("web-2", "app: web");
    w.pod_status("web-2", &["10.31.0.2"], true);
    w.expect_on(api2, "web", &[("web-1", "HEALTHY"), ("web-2", "HEALTHY")]);
    w.pod_status("web-1", &["10.31.0.1"], false);
    w.expect_on(api2, "web", &[("web-1", "UNHEALTHY"), ("web-2", "HEALTHY")]);
    assert!(counter_sum(w.metrics_port, "waymark_controller_reconciles_total") > 0.0);
    assert_eq!(
        counter_sum(metrics2, "waymark_controller_reconciles_total"),
        0.0,
        "a standby on a shared store leaves the registry to the leader"
    );

    // The leader dies: the standby takes over the reconciling (and the status).
    w.kill9();
    w.pod("web-3", "app: web");
    w.pod_status("web-3", &["10.31.0.3"], true);
    w.expect_on(
        api2,
        "web",
        &[
            ("web-1", "UNHEALTHY"),
            ("web-2", "HEALTHY"),
            ("web-3", "HEALTHY"),
        ],
    );
    eventually("status from the new leader", || {
        (w.sd_status("web", "{.status.instances.total}") == "3").then_some(())
    });
    let _ = standby.kill();
    let _ = standby.wait();
}

#[test]
fn two_clusters_share_one_registry_and_never_remove_each_others_instances() {
    let etcd = Etcd::start();
    let mut east = on_etcd("mc-east", &etcd, "east", None);
    let mut west = on_etcd("mc-west", &etcd, "west", Some(east.registry_ns.clone()));
    // West's Waymark Namespace joins the registry namespace east created.
    eventually("west's Namespace ready", || {
        let (status, _) = west.condition("wns", &west.registry_ns.clone(), "Ready");
        (status == "True").then_some(())
    });

    // One service with pods of both clusters.
    for w in [&east, &west] {
        w.discovery("web", "  selector: {matchLabels: {app: web}}");
    }
    east.pod("east-1", "app: web");
    east.pod_status("east-1", &["10.32.0.1"], true);
    west.pod("west-1", "app: web");
    west.pod_status("west-1", &["10.33.0.1"], true);
    let both = [("east-1", "HEALTHY"), ("west-1", "HEALTHY")];
    east.expect("web", &both);
    west.expect("web", &both);
    assert_eq!(
        service_id_on(east.api_port, "web"),
        service_id_on(west.api_port, "web")
    );
    eventually("west's ServiceDiscovery ready", || {
        let (status, _) = west.condition("sd", "web", "Ready");
        (status == "True").then_some(())
    });

    // West restarts after its pod went while it was down: west's instance goes,
    // east's stays.
    west.kill9();
    west.kubectl(&["delete", "pod", "west-1", "--grace-period=0", "--force"]);
    west.start();
    east.expect("web", &[("east-1", "HEALTHY")]);
    west.pod("west-2", "app: web");
    west.pod_status("west-2", &["10.33.0.2"], true);
    east.expect("web", &[("east-1", "HEALTHY"), ("west-2", "HEALTHY")]);

    // East restarts, twice, while west is down for long: nothing of west's is removed.
    west.kill9();
    for _ in 0..2 {
        east.kill9();
        east.start();
        std::thread::sleep(Duration::from_secs(1));
        east.expect("web", &[("east-1", "HEALTHY"), ("west-2", "HEALTHY")]);
    }

    // West comes back and deletes its ServiceDiscovery: only its instance goes.
    west.start();
    west.kubectl(&["delete", "servicediscovery", "web"]);
    east.expect("web", &[("east-1", "HEALTHY")]);
    std::thread::sleep(Duration::from_secs(1));
    east.expect("web", &[("east-1", "HEALTHY")]);
}
