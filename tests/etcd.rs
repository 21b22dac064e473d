//! The shared store against a real etcd (built from its Go module): several
//! `waymark serve` replicas on one registry, concurrent writers on different
//! replicas, a replica killed mid-load, etcd members lost and back, and a
//! watch broken by compaction. Every call goes through the official AWS SDK.

#[path = "api/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::config::retry::RetryConfig;
use aws_sdk_servicediscovery::types::HealthStatusFilter;
use futures::StreamExt;
use harness::support::etcd::Etcd;
use harness::support::{Options, Server};
use harness::{SdkClient, create_service, http_namespace};

/// A replica on the shared store at `url`, with extra flags.
fn replica(url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--store".to_string(), url.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start_with(Options {
        args,
        ..Options::default()
    })
}

/// The same client without the SDK's retries, to see each answer.
fn no_retry(client: &Client) -> Client {
    Client::from_conf(
        client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

async fn register(client: &Client, service_id: &str, id: &str) -> Result<(), String> {
    client
        .register_instance()
        .service_id(service_id)
        .instance_id(id)
        .attributes("AWS_INSTANCE_IPV4", "10.1.2.3")
        .attributes("replica-test", id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{:?}", e.into_service_error()))
}

async fn deregister(client: &Client, service_id: &str, id: &str) -> Result<(), String> {
    client
        .deregister_instance()
        .service_id(service_id)
        .instance_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{:?}", e.into_service_error()))
}

/// What a replica hands out for the service: instance ids and revision.
async fn discovered(client: &Client, namespace: &str, service: &str) -> (BTreeSet<String>, i64) {
    let out = client
        .discover_instances()
        .namespace_name(namespace)
        .service_name(service)
        .health_status(HealthStatusFilter::All)
        .max_results(1000)
        .send()
        .await
        .unwrap();
    let ids = out
        .instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect();
    (ids, out.instances_revision().unwrap_or_default())
}

/// Waits until every client discovers exactly `want` with one revision.
async fn converge(
    clients: &[Client],
    namespace: &str,
    service: &str,
    want: &BTreeSet<String>,
) -> i64 {
    converge_within(clients, namespace, service, want, &BTreeSet::new()).await
}

/// Waits until every client discovers the same instances with one revision:
/// all of `want`, and besides those only some of `maybe` (writes whose
/// outcome the caller never learnt).
async fn converge_within(
    clients: &[Client],
    namespace: &str,
    service: &str,
    want: &BTreeSet<String>,
    maybe: &BTreeSet<String>,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut seen = Vec::new();
        for c in clients {
            seen.push(discovered(c, namespace, service).await);
        }
        let same = seen.iter().all(|s| *s == seen[0]);
        let fits = |ids: &BTreeSet<String>| {
            ids.is_superset(want) && ids.difference(want).all(|id| maybe.contains(id))
        };
        if same && fits(&seen[0].0) {
            return seen[0].1;
        }
        if Instant::now() > deadline {
            for (i, (ids, rev)) in seen.iter().enumerate() {
                let missing: Vec<_> = want.difference(ids).take(5).collect();
                let extra: Vec<_> = ids.difference(want).take(5).collect();
                eprintln!(
                    "replica {i}: {} instances, revision {rev}, missing {missing:?}, extra {extra:?}",
                    ids.len()
                );
            }
            panic!("replicas did not converge on {} instances", want.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each replica `r` registers `r-0 … r-{n-1}` and, as soon as each of the
/// first `d` is acknowledged, deregisters it through the next replica, 16
/// calls at a time per replica. Returns the acknowledged registrations and
/// deregistrations.
async fn load(
    clients: &[Client],
    service_id: &str,
    n: usize,
    d: usize,
) -> (BTreeSet<String>, BTreeSet<String>) {
    load_observed(clients, service_id, n, d, Arc::default()).await
}

/// [`load`], recording each acknowledged registration in `registered` as it
/// happens (so a test can act mid-load).
async fn load_observed(
    clients: &[Client],
    service_id: &str,
    n: usize,
    d: usize,
    registered: Arc<Mutex<BTreeSet<String>>>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let deregistered = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tasks = Vec::new();
    for r in 0..clients.len() {
        let here = clients[r].clone();
        let next = clients[(r + 1) % clients.len()].clone();
        let service_id = service_id.to_string();
        let registered = registered.clone();
        let deregistered = deregistered.clone();
        tasks.push(tokio::spawn(async move {
            futures::stream::iter(0..n)
                .map(|i| {
                    let (here, next, service_id) = (here.clone(), next.clone(), service_id.clone());
                    let (registered, deregistered) = (registered.clone(), deregistered.clone());
                    async move {
                        let id = format!("r{r}-{i:03}");
                        if register(&here, &service_id, &id).await.is_err() {
                            return;
                        }
                        registered.lock().unwrap().insert(id.clone());
                        if i < d && deregister(&next, &service_id, &id).await.is_ok() {
                            deregistered.lock().unwrap().insert(id);
                        }
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<()>>()
                .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = registered.lock().unwrap().clone();
    let d = deregistered.lock().unwrap().clone();
    (r, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_serve_one_registry_under_concurrent_writes() {
    let etcd = Etcd::start();
    let replicas: Vec<Server> = (0..3)
        .map(|_| replica(&etcd.url(), &["--log", "waymark::registry=debug,warn"]))
        .collect();
    let clients: Vec<Client> = replicas.iter().map(|s| s.client()).collect();
    let ns = http_namespace(&clients[0], "shared.test").await;
    // Created on replica 1 right after replica 0 acknowledged the namespace.
    let svc = create_service(&clients[1], &ns, "api").await;
    let (_, before) = discovered(&clients[2], "shared.test", "api").await;

    // While the load runs, every replica is asked what it serves: one
    // revision must always stand for one instance set, whichever replica
    // answers, and no replica's revision may go back.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (clients, done) = (clients.clone(), done.clone());
        tokio::spawn(async move {
            let mut samples: Vec<(usize, i64, BTreeSet<String>)> = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, c) in clients.iter().enumerate() {
                    let (ids, rev) = discovered(c, "shared.test", "api").await;
                    samples.push((i, rev, ids));
                }
            }
            samples
        })
    };
    // 3 x 500 calls: 350 registrations and 150 deregistrations per replica.
    let (registered, deregistered) = load(&clients, &svc, 350, 150).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let mut state_of: std::collections::HashMap<i64, &BTreeSet<String>> = Default::default();
    let mut last = [i64::MIN; 3];
    for (replica, rev, ids) in &samples {
        assert!(
            *rev >= last[*replica],
            "replica {replica}'s revision went back from {} to {rev}",
            last[*replica]
        );
        last[*replica] = *rev;
        let first = state_of.entry(*rev).or_insert(ids);
        assert_eq!(
            *first, ids,
            "revision {rev} stood for two different instance sets (replica {replica})"
        );
    }
    assert!(samples.len() >= 3, "sampled during the load");
    assert_eq!(registered.len(), 3 * 350, "every registration acknowledged");
    assert_eq!(
        deregistered.len(),
        3 * 150,
        "a deregistration on the next replica finds what another just registered"
    );
    let want: BTreeSet<String> = registered.difference(&deregistered).cloned().collect();
    let revision = converge(&clients, "shared.test", "api", &want).await;
    // Every replica reached the same revision (`converge`), past the
    // empty service's. It is etcd's revision of the last change to the
    // instance set (so grouped writes step it once), not a count of them:
    // nothing lost is shown by the instance sets above.
    assert!(revision > before, "{revision} after {before}");

    // Each replica answers GetInstance for what another registered, and
    // operations recorded anywhere are visible everywhere.
    let any = want.iter().next().unwrap();
    for c in &clients {
        let got = c
            .get_instance()
            .service_id(&svc)
            .instance_id(any)
            .send()
            .await
            .unwrap();
        assert_eq!(got.instance().unwrap().id(), any.as_str());
    }
    let ops = |c: Client| async move {
        let mut all = BTreeSet::new();
        let mut pages = c.list_operations().max_results(100).into_paginator().send();
        while let Some(page) = pages.next().await {
            for op in page.unwrap().operations() {
                all.insert(op.id().unwrap().to_string());
            }
        }
        all
    };
    let first = ops(clients[0].clone()).await;
    assert!(first.len() > 1500, "{} operations", first.len());
    assert_eq!(ops(clients[2].clone()).await, first);
    for s in &replicas {
        assert_eq!(s.metric("waymark_store_stale"), Some(0.0));
        assert_eq!(s.readyz().map(|r| r.0), Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_loses_no_acknowledged_write() {
    let etcd = Etcd::start();
    let mut replicas: Vec<Server> = (0..3).map(|_| replica(&etcd.url(), &[])).collect();
    let clients: Vec<Client> = replicas.iter().map(|s| no_retry(&s.client())).collect();
    let ns = http_namespace(&clients[0], "kill.test").await;
    let svc = create_service(&clients[0], &ns, "api").await;

    let load_clients = clients.clone();
    let svc_for_load = svc.clone();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let observed = acked.clone();
    let running = tokio::spawn(async move {
        load_observed(&load_clients, &svc_for_load, 300, 100, observed).await
    });
    // Kill replica 2 once it has acknowledged a few writes (however slow the
    // machine is), well before its 300 are done.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked
        .lock()
        .unwrap()
        .iter()
        .filter(|id| id.starts_with("r2-"))
        .count()
        < 10
    {
        assert!(
            std::time::Instant::now() < deadline,
            "replica 2 acknowledged nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replicas[2].kill();
    let (registered, deregistered) = running.await.unwrap();
    assert!(
        registered.iter().any(|id| id.starts_with("r2-")),
        "the killed replica acknowledged some writes before it died"
    );
    assert!(
        registered.iter().filter(|id| id.starts_with("r2-")).count() < 300,
        "the kill landed during the load"
    );
    // The survivors serve everything acknowledged, by any replica, and
    // nothing whose deregistration was acknowledged. Calls in flight on the
    // killed replica may or may not have reached etcd: registrations there
    // (r2-*) and the deregistrations replica 1's load sent there (r1-*).
    let mut in_flight: BTreeSet<String> = (0..300)
        .map(|i| format!("r2-{i:03}"))
        .filter(|id| !registered.contains(id))
        .collect();
    in_flight.extend(
        (0..100)
            .map(|i| format!("r1-{i:03}"))
            .filter(|id| registered.contains(id) && !deregistered.contains(id)),
    );
    let want: BTreeSet<String> = registered
        .difference(&deregistered)
        .filter(|id| !in_flight.contains(*id))
        .cloned()
        .collect();
    converge_within(&clients[..2], "kill.test", "api", &want, &in_flight).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_etcd_quorum_fails_writes_retryably_and_reads_go_on() {
    let mut etcd = Etcd::cluster(3);
    let flags = ["--etcd-timeout-seconds", "1", "--stale-after-seconds", "2"];
    let a = replica(&etcd.url(), &flags);
    let b = replica(&etcd.url(), &flags);
    let (ca, cb) = (no_retry(&a.client()), no_retry(&b.client()));
    let ns = http_namespace(&ca, "quorum.test").await;
    let svc = create_service(&ca, &ns, "api").await;
    register(&ca, &svc, "before").await.unwrap();
    register(&ca, &svc, "gone").await.unwrap();

    // One member down: the other two are a quorum, writes go on.
    etcd.kill(0);
    for i in 0..5 {
        register(&cb, &svc, &format!("one-down-{i}")).await.unwrap();
    }

    // Two down: no quorum. Writes fail with a retryable error, never a
    // silent success; reads answer from each replica's index; /readyz says
    // stale.
    etcd.kill(1);
    let err = register(&ca, &svc, "no-quorum").await.unwrap_err();
    assert!(err.contains("ServiceUnavailable"), "{err}");
    let err = deregister(&cb, &svc, "gone").await.unwrap_err();
    assert!(err.contains("ServiceUnavailable"), "{err}");
    let (ids, _) = discovered(&cb, "quorum.test", "api").await;
    assert!(
        ids.contains("before") && ids.contains("one-down-4"),
        "{ids:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.readyz().map(|r| r.0) != Some(503) {
        assert!(Instant::now() < deadline, "/readyz never said stale");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.readyz().unwrap().1.contains("stale"));
    assert_eq!(a.metric("waymark_store_stale"), Some(1.0));

    // Quorum back: writes succeed, both replicas converge and are ready.
    etcd.restart(0);
    etcd.restart(1);
    assert!(etcd.wait_healthy(Duration::from_secs(30)), "etcd recovered");
    let deadline = Instant::now() + Duration::from_secs(20);
    while register(&ca, &svc, "after").await.is_err() {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut want: BTreeSet<String> = (0..5).map(|i| format!("one-down-{i}")).collect();
    want.insert("before".into());
    want.insert("after".into());
    // The two writes without quorum may or may not have been applied (etcd
    // can still commit a proposal whose client gave up): the errors said
    // so. Whatever etcd holds, both replicas agree on it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut pages = etcd.client().await;
    let held = pages
        .get(
            "/waymark/inst/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    let held: BTreeSet<String> = held
        .kvs()
        .iter()
        .map(|kv| {
            String::from_utf8_lossy(kv.key())
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for maybe in ["no-quorum", "gone"] {
        if held.contains(maybe) {
            want.insert(maybe.into());
        }
    }
    converge(&[ca.clone(), cb.clone()], "quorum.test", "api", &want).await;
    for s in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.readyz().map(|r| r.0) != Some(200) {
            assert!(Instant::now() < deadline, "/readyz did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_broken_by_compaction_relists_and_converges() {
    let mut etcd = Etcd::cluster(3);
    // Replica A talks to member 0 only, replica B to member 1 only.
    let a = replica(&etcd.url_of(&[0]), &["--etcd-timeout-seconds", "1"]);
    let b = replica(&etcd.url_of(&[1]), &[]);
    let (ca, cb) = (a.client(), b.client());
    let ns = http_namespace(&cb, "compact.test").await;
    let svc = create_service(&cb, &ns, "api").await;
    for i in 0..10 {
        register(&cb, &svc, &format!("early-{i}")).await.unwrap();
    }
    let mut want: BTreeSet<String> = (0..10).map(|i| format!("early-{i}")).collect();
    let before = converge(&[ca.clone(), cb.clone()], "compact.test", "api", &want).await;

    // A loses its member; B writes on, etcd compacts past what A has seen.
    etcd.kill(0);
    for i in 0..20 {
        register(&cb, &svc, &format!("late-{i}")).await.unwrap();
        want.insert(format!("late-{i}"));
    }
    for i in 0..5 {
        deregister(&cb, &svc, &format!("early-{i}")).await.unwrap();
        want.remove(&format!("early-{i}"));
    }
    etcd.compact().await;
    // A keeps answering from what it has meanwhile.
    let (stale_view, _) = discovered(&ca, "compact.test", "api").await;
    assert!(stale_view.contains("early-0"), "{stale_view:?}");

    etcd.restart(0);
    let revision = converge(&[ca.clone(), cb.clone()], "compact.test", "api", &want).await;
    assert!(revision > before, "{revision} after {before}");
    assert!(
        a.metric("waymark_store_relists_total").unwrap_or(0.0) >= 1.0,
        "A re-read the registry after the compaction"
    );
    // And A takes writes again, checked against the fresh state.
    register(&ca, &svc, "from-a").await.unwrap();
    want.insert("from-a".into());
    converge(&[ca, cb], "compact.test", "api", &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_name_is_taken_once_across_replicas_and_bad_stores_are_refused() {
    let etcd = Etcd::start();
    let replicas: Vec<Server> = (0..2).map(|_| replica(&etcd.url(), &[])).collect();
    let clients: Vec<Client> = replicas.iter().map(|s| no_retry(&s.client())).collect();
    // Both replicas race to create the same namespace names.
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut tasks = Vec::new();
    for n in 0..10 {
        for c in &clients {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let r = c
                    .create_http_namespace()
                    .name(format!("race-{n}"))
                    .send()
                    .await;
                match r {
                    Ok(_) => "created".to_string(),
                    Err(e) => format!("{:?}", e.into_service_error())
                        .split('(')
                        .next()
                        .unwrap()
                        .to_string(),
                }
            }));
        }
    }
    for t in tasks {
        *outcomes.entry(t.await.unwrap()).or_default() += 1;
    }
    assert_eq!(outcomes.get("created"), Some(&10), "{outcomes:?}");
    assert_eq!(
        outcomes.get("NamespaceAlreadyExists"),
        Some(&10),
        "{outcomes:?}"
    );
    let out = clients[1].list_namespaces().send().await.unwrap();
    assert_eq!(out.namespaces().len(), 10);

    // A prefix holding something else is refused, and so is an unreachable etcd.
    etcd.client()
        .await
        .put("/other/stuff", "x", None)
        .await
        .unwrap();
    let err = serve_refused(&["--store", &etcd.url(), "--etcd-prefix", "/other/"]);
    assert!(
        err.contains("not a waymark") && err.contains("/other/"),
        "{err}"
    );
    let port = harness::support::free_port();
    let unreachable = format!("etcd://127.0.0.1:{port}");
    let err = serve_refused(&["--store", &unreachable, "--etcd-timeout-seconds", "1"]);
    assert!(
        err.contains("unavailable") || err.contains("answered"),
        "{err}"
    );
}

/// `waymark serve` with `args` exits with an error: its stderr.
fn serve_refused(args: &[&str]) -> String {
    let out = std::process::Command::new(harness::support::BIN)
        .arg("serve")
        .args(args)
        .args([
            "--api-addr",
            "127.0.0.1:0",
            "--dns-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
