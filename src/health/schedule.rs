//! The probe schedule (pure: time and randomness are passed in, no I/O).
//!
//! One binary heap of next-due times over every checked instance — no timer
//! or task per instance. Entries are invalidated lazily: a target remembers
//! the one due time that is current, and heap entries that disagree (the
//! target was removed, replaced or rescheduled) are skipped when popped.
//!
//! Spreading: a target whose verdict is already known (restored from the
//! registry) is first probed at a random point of its interval; a new target
//! at once, and its second probe at a random point of the second half of
//! the interval, so a thousand instances registered together do not stay in
//! lockstep. Afterwards each probe is due 90–100 % of the interval after the
//! previous one started, which keeps every instance probed at least once
//! per interval and lets phases drift apart.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::target::{Defaults, Endpoint, Timing};
use super::threshold::Verdict;
use crate::registry::model::{HealthCheckConfig, Owner};
use crate::registry::{Index, ProbeVerdict, ServiceEntry};

/// Identifies one incarnation of a target: a changed endpoint gets a new id,
/// so results of probes started before the change are discarded.
pub type TargetId = u64;

/// A probe to start now.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The target, for [`Scheduler::complete`].
    pub id: TargetId,
    /// What to probe.
    pub endpoint: Arc<Endpoint>,
    /// How long the probe may take.
    pub timeout: Duration,
}

#[derive(Debug)]
struct Target {
    service_id: Arc<str>,
    instance_id: String,
    endpoint: Arc<Endpoint>,
    timing: Timing,
    verdict: Verdict,
    /// The current due time while queued; `None` while a probe runs.
    due: Option<Instant>,
    /// When the running (or last) probe started.
    started: Instant,
    /// No probe has finished since the target was created.
    fresh: bool,
}

#[derive(Debug)]
struct ServiceTargets {
    /// The `InstancesRevision` and check the targets were derived from: both
    /// unchanged means the service's targets are unchanged (instances'
    /// addresses are attributes, and attribute changes grow the revision).
    revision: u64,
    config: HealthCheckConfig,
    instances: HashMap<String, TargetId>,
}

/// Every checked instance, its verdict and its next due time.
#[derive(Debug)]
pub struct Scheduler {
    defaults: Defaults,
    services: HashMap<Arc<str>, ServiceTargets>,
    targets: HashMap<TargetId, Target>,
    heap: BinaryHeap<Reverse<(Instant, TargetId)>>,
    next_id: TargetId,
    /// Probe only the instances of this cluster's controller (and the API's).
    cluster: Option<Arc<str>>,
}

/// A random point in `[lo, hi]` of `interval`.
fn fraction(rng: &mut impl Rng, interval: Duration, lo: f64, hi: f64) -> Duration {
    interval.mul_f64(rng.random_range(lo..=hi))
}

impl Scheduler {
    /// An empty schedule.
    pub fn new(defaults: Defaults) -> Self {
        Self {
            defaults,
            services: HashMap::new(),
            targets: HashMap::new(),
            heap: BinaryHeap::new(),
            next_id: 0,
            cluster: None,
        }
    }

    /// Leaves out the instances other clusters' controllers own: on a
    /// registry shared by several clusters each cluster's leader probes its
    /// own pods (another cluster's pod addresses may not even be routable
    /// from here). Instances registered through the API are probed by every
    /// prober of the registry.
    pub fn scoped_to(mut self, cluster: Option<Arc<str>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Whether this schedule probes an instance owned by `owner`.
    fn probes(&self, owner: &Owner) -> bool {
        match (owner, &self.cluster) {
            (Owner::Controller { cluster, .. }, Some(mine)) => **mine == **cluster,
            _ => true,
        }
    }

    /// Number of checked instances.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether no instance is checked.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Follows the registry: targets for new instances (probed at once when
    /// never probed), none for removed ones, new checks for changed
    /// endpoints, new timings in place. Services whose revision and check are
    /// unchanged are skipped, so a sync costs one look per service.
    pub fn sync(&mut self, index: &Index, now: Instant, rng: &mut impl Rng) {
        for entry in index.services() {
            let Some(hc) = &entry.service.health_check_config else {
                continue;
            };
            let unchanged = self
                .services
                .get(entry.service.id.as_str())
                .is_some_and(|s| s.revision == entry.service.revision && s.config == *hc);
            if !unchanged {
                self.sync_service(entry, hc, now, rng);
            }
        }
        let gone: Vec<Arc<str>> = self
            .services
            .keys()
            .filter(|id| {
                index
                    .service(id)
                    .is_none_or(|e| e.service.health_check_config.is_none())
            })
            .cloned()
            .collect();
        for id in gone {
            if let Some(s) = self.services.remove(&id) {
                for tid in s.instances.values() {
                    self.targets.remove(tid);
                }
            }
        }
        self.compact();
    }

    fn sync_service(
        &mut self,
        entry: &ServiceEntry,
        hc: &HealthCheckConfig,
        now: Instant,
        rng: &mut impl Rng,
    ) {
        let timing = Timing::of(hc, &self.defaults);
        let (service_id, mut old) = match self.services.remove_entry(entry.service.id.as_str()) {
            Some((id, s)) => (id, s.instances),
            None => (Arc::from(entry.service.id.as_str()), HashMap::new()),
        };
        let mut instances = HashMap::with_capacity(entry.instances.len());
        for (iid, inst) in &entry.instances {
            if !self.probes(&inst.owner) {
                continue;
            }
            let endpoint = Endpoint::of(hc, &inst.attributes);
            let tid = match old.remove(iid) {
                Some(tid)
                    if self
                        .targets
                        .get(&tid)
                        .is_some_and(|t| *t.endpoint == endpoint) =>
                {
                    self.retime(tid, timing, now, rng);
                    tid
                }
                // The endpoint changed: a new check, whose first result
                // applies at once.
                Some(tid) => {
                    self.targets.remove(&tid);
                    let v = Verdict::new(None);
                    self.insert(&service_id, iid, endpoint, timing, v, now, rng)
                }
                // New to the schedule: start from what the registry recorded
                // (`None` for a new instance; restarts and leadership changes
                // keep verdicts).
                None => {
                    let v = Verdict::new(inst.probe);
                    self.insert(&service_id, iid, endpoint, timing, v, now, rng)
                }
            };
            instances.insert(iid.clone(), tid);
        }
        for tid in old.values() {
            self.targets.remove(tid);
        }
        self.services.insert(
            service_id,
            ServiceTargets {
                revision: entry.service.revision,
                config: hc.clone(),
                instances,
            },
        );
    }

    /// New timing for a kept target; a changed interval reschedules it.
    fn retime(&mut self, tid: TargetId, timing: Timing, now: Instant, rng: &mut impl Rng) {
        let Some(t) = self.targets.get_mut(&tid) else {
            return;
        };
        let rescheduled = t.timing.interval != timing.interval && t.due.is_some();
        t.timing = timing;
        if rescheduled {
            let at = now + fraction(rng, timing.interval, 0.0, 1.0);
            t.due = Some(at);
            self.heap.push(Reverse((at, tid)));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        service_id: &Arc<str>,
        instance_id: &str,
        endpoint: Endpoint,
        timing: Timing,
        verdict: Verdict,
        now: Instant,
        rng: &mut impl Rng,
    ) -> TargetId {
        let tid = self.next_id;
        self.next_id += 1;
        let at = if verdict.current().is_some() {
            now + fraction(rng, timing.interval, 0.0, 1.0)
        } else {
            now
        };
        self.targets.insert(
            tid,
            Target {
                service_id: service_id.clone(),
                instance_id: instance_id.to_string(),
                endpoint: Arc::new(endpoint),
                timing,
                verdict,
                due: Some(at),
                started: now,
                fresh: true,
            },
        );
        self.heap.push(Reverse((at, tid)));
        tid
    }

    /// Drops heap entries that no longer point at a queued target once they
    /// outnumber the live ones.
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.targets.len() + 1024 {
            self.heap = self
                .targets
                .iter()
                .filter_map(|(id, t)| t.due.map(|at| Reverse((at, *id))))
                .collect();
        }
    }

    fn is_current(&self, at: Instant, id: TargetId) -> bool {
        self.targets.get(&id).is_some_and(|t| t.due == Some(at))
    }

    /// When the next probe is due (`None`: nothing is queued).
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if self.is_current(at, id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// The next probe due at or before `now`, marked as running.
    pub fn pop_due(&mut self, now: Instant) -> Option<Launch> {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if !self.is_current(at, id) {
                self.heap.pop();
                continue;
            }
            if at > now {
                return None;
            }
            self.heap.pop();
            let t = self.targets.get_mut(&id)?;
            t.due = None;
            t.started = now;
            return Some(Launch {
                id,
                endpoint: t.endpoint.clone(),
                timeout: t.timing.timeout,
            });
        }
        None
    }

    /// Records the result of a probe (`None`: not counted, e.g. the prober
    /// ran out of sockets) and queues the target's next probe. Returns the
    /// verdict to apply when the threshold rule changes it. Results for
    /// targets that were removed or replaced meanwhile are dropped.
    pub fn complete(
        &mut self,
        id: TargetId,
        passing: Option<bool>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Option<ProbeVerdict> {
        let t = self.targets.get_mut(&id)?;
        if t.due.is_some() {
            // Not running: a stale result.
            return None;
        }
        let changed = passing.and_then(|p| t.verdict.observe(p, t.timing.threshold));
        let (lo, hi) = if t.fresh { (0.5, 1.0) } else { (0.9, 1.0) };
        t.fresh = false;
        let at = (t.started + fraction(rng, t.timing.interval, lo, hi)).max(now);
        t.due = Some(at);
        self.heap.push(Reverse((at, id)));
        changed.map(|passing| ProbeVerdict {
            service_id: t.service_id.to_string(),
            instance_id: t.instance_id.clone(),
            passing,
        })
    }

    /// Resets the verdicts of these instances to what the registry holds
    /// (after a failed write, so the threshold rule starts from the truth).
    pub fn reset_verdicts(&mut self, index: &Index, verdicts: &[ProbeVerdict]) {
        for v in verdicts {
            let tid = self
                .services
                .get(v.service_id.as_str())
                .and_then(|s| s.instances.get(&v.instance_id));
            let recorded = index
                .instance(&v.service_id, &v.instance_id)
                .and_then(|i| i.probe);
            if let Some(t) = tid.and_then(|tid| self.targets.get_mut(tid)) {
                t.verdict = Verdict::new(recorded);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::registry::model::HealthStatus;
    use crate::registry::model::{Attributes, HealthCheckType, NamespaceType, Owner, TargetType};
    use crate::registry::{
        CreateNamespace, CreateService, DesiredInstance, RegisterInstance, Registry, UpdateService,
    };

    const INTERVAL: Duration = Duration::from_secs(10);

    fn defaults() -> Defaults {
        Defaults {
            interval: INTERVAL,
            timeout: Duration::from_secs(2),
        }
    }

    fn hc(kind: HealthCheckType, threshold: i32) -> HealthCheckConfig {
        HealthCheckConfig {
            kind,
            resource_path: None,
            failure_threshold: Some(threshold),
            interval_seconds: None,
            timeout_seconds: None,
        }
    }

    struct Fixture {
        reg: Registry,
        svc: String,
        rng: SmallRng,
        sched: Scheduler,
        t0: Instant,
    }

    impl Fixture {
        fn new(threshold: i32) -> Self {
            let reg = Registry::in_memory();
            let op = reg
                .create_namespace(CreateNamespace {
                    name: "health.test".into(),
                    kind: NamespaceType::Http,
                    description: None,
                    soa_ttl: None,
                    vpc: None,
                    creator_request_id: None,
                    tags: vec![],
                    owner: Owner::Api,
                })
                .unwrap();
            let ns = op.targets[&TargetType::Namespace].clone();
            let svc = reg
                .create_service(CreateService {
                    name: "web".into(),
                    namespace_id: ns,
                    description: None,
                    http_only: true,
                    dns_config: None,
                    health_check_config: Some(hc(HealthCheckType::Http, threshold)),
                    health_check_custom_config: None,
                    creator_request_id: None,
                    tags: vec![],
                    owner: Owner::Api,
                })
                .unwrap()
                .id;
            Self {
                reg,
                svc,
                rng: SmallRng::seed_from_u64(7),
                sched: Scheduler::new(defaults()),
                t0: Instant::now(),
            }
        }

        fn register(&self, id: &str, ip: &str, port: u16) {
            let attributes: Attributes = [
                ("AWS_INSTANCE_IPV4".to_string(), ip.to_string()),
                ("AWS_INSTANCE_PORT".to_string(), port.to_string()),
            ]
            .into();
            self.reg
                .register_instance(RegisterInstance {
                    service_id: self.svc.clone(),
                    instance_id: id.into(),
                    attributes,
                    creator_request_id: None,
                    owner: Owner::Api,
                })
                .unwrap();
        }

        fn sync(&mut self, at: Duration) {
            let index = self.reg.read();
            self.sched.sync(&index, self.t0 + at, &mut self.rng);
        }

        /// Every launch due at `at`, by instance address.
        fn due(&mut self, at: Duration) -> Vec<Launch> {
            let mut out = Vec::new();
            while let Some(l) = self.sched.pop_due(self.t0 + at) {
                out.push(l);
            }
            out
        }

        fn complete(&mut self, l: &Launch, passing: bool, at: Duration) -> Option<ProbeVerdict> {
            self.sched
                .complete(l.id, Some(passing), self.t0 + at, &mut self.rng)
        }
    }

    fn port(l: &Launch) -> u16 {
        l.endpoint.addr.unwrap().port()
    }

    #[test]
    fn a_scoped_schedule_probes_its_own_clusters_pods_and_the_apis_instances() {
        let mut f = Fixture::new(1);
        f.sched = Scheduler::new(defaults()).scoped_to(Some(Arc::from("east")));
        f.register("api-1", "127.0.0.1", 1000);
        for (cluster, port) in [("east", 2000), ("west", 3000)] {
            let owner = Owner::Controller {
                cluster: cluster.into(),
                object: "ServiceDiscovery shop/web".into(),
            };
            let desired = vec![DesiredInstance {
                id: format!("{cluster}-pod"),
                attributes: [
                    ("AWS_INSTANCE_IPV4".to_string(), "127.0.0.1".to_string()),
                    ("AWS_INSTANCE_PORT".to_string(), port.to_string()),
                ]
                .into(),
                health: Some(HealthStatus::Healthy),
            }];
            f.reg.sync_instances(&f.svc, desired, &owner).unwrap();
        }
        f.sync(Duration::ZERO);
        let mut ports: Vec<u16> = f.due(Duration::ZERO).iter().map(port).collect();
        ports.sort_unstable();
        assert_eq!(ports, [1000, 2000], "west's pod is west's to probe");
        // Unscoped (`waymark serve`): everything.
        f.sched = Scheduler::new(defaults());
        f.sync(Duration::ZERO);
        assert_eq!(f.due(Duration::ZERO).len(), 3);
    }

    #[test]
    fn new_instances_are_due_at_once_and_then_spread_over_the_interval() {
        let mut f = Fixture::new(1);
        for i in 0..100 {
            f.register(&format!("i-{i}"), "127.0.0.1", 1000 + i);
        }
        f.sync(Duration::ZERO);
        assert_eq!(f.sched.len(), 100);
        let first = f.due(Duration::ZERO);
        assert_eq!(first.len(), 100, "every new instance is probed at once");
        assert_eq!(f.sched.next_due(), None, "all running");
        for l in &first {
            f.complete(l, true, Duration::from_millis(5));
        }
        // The second probes land in the second half of the interval, spread.
        let next = f.sched.next_due().unwrap() - f.t0;
        assert!(next >= INTERVAL / 2, "{next:?}");
        assert!(f.due(INTERVAL / 2 - Duration::from_millis(1)).is_empty());
        let mut seconds = std::collections::BTreeSet::new();
        let mut n = 0;
        let mut t = INTERVAL / 2;
        while t <= INTERVAL {
            for l in f.due(t) {
                seconds.insert(t.as_millis() / 1000);
                n += 1;
                f.complete(&l, true, t);
            }
            t += Duration::from_millis(100);
        }
        assert_eq!(n, 100, "each probed again within the interval");
        assert!(seconds.len() >= 5, "spread: {seconds:?}");
        // Steady state: every instance once per interval, never more often
        // than 90 % of it.
        let mut last: HashMap<u16, Duration> = HashMap::new();
        let mut t = INTERVAL;
        while t <= INTERVAL * 6 {
            for l in f.due(t) {
                if let Some(prev) = last.insert(port(&l), t) {
                    let gap = t - prev;
                    assert!(
                        gap >= INTERVAL * 9 / 10 - Duration::from_millis(100),
                        "{gap:?}"
                    );
                    assert!(gap <= INTERVAL + Duration::from_millis(100), "{gap:?}");
                }
                f.complete(&l, true, t);
            }
            t += Duration::from_millis(100);
        }
        assert_eq!(last.len(), 100);
    }

    #[test]
    fn the_first_result_applies_at_once_then_the_threshold_rules() {
        let mut f = Fixture::new(3);
        f.register("a", "127.0.0.1", 80);
        f.sync(Duration::ZERO);
        let l = f.due(Duration::ZERO).pop().unwrap();
        let v = f.complete(&l, true, Duration::ZERO).unwrap();
        assert!(v.passing && v.instance_id == "a" && v.service_id == f.svc);
        let mut verdicts = Vec::new();
        let mut t = Duration::ZERO;
        for result in [false, false, false, true, true, false, true] {
            t += INTERVAL;
            let l = f.due(t).pop().expect("due within the interval");
            verdicts.push(f.complete(&l, result, t).map(|v| v.passing));
        }
        assert_eq!(
            verdicts,
            [None, None, Some(false), None, None, None, None],
            "three failures fail it; two successes and a failure do not pass it"
        );
        // A result not counted (the prober's own error) changes nothing but
        // still reschedules.
        t += INTERVAL;
        let l = f.due(t).pop().unwrap();
        assert!(f.sched.complete(l.id, None, f.t0 + t, &mut f.rng).is_none());
        assert!(f.sched.next_due().is_some());
    }

    #[test]
    fn recorded_verdicts_are_kept_and_spread_at_start() {
        let mut f = Fixture::new(2);
        for i in 0..50 {
            f.register(&format!("i-{i}"), "127.0.0.1", 2000 + i);
        }
        let verdicts: Vec<_> = (0..50)
            .map(|i| ProbeVerdict {
                service_id: f.svc.clone(),
                instance_id: format!("i-{i}"),
                passing: false,
            })
            .collect();
        f.reg.apply_probe_verdicts(&verdicts).unwrap();
        f.sync(Duration::ZERO);
        let now = f.due(Duration::ZERO);
        assert!(
            now.len() < 5,
            "restored verdicts are spread, {} due at once",
            now.len()
        );
        let mut t = Duration::ZERO;
        let mut launches = now;
        while t < INTERVAL {
            t += Duration::from_millis(100);
            launches.extend(f.due(t));
        }
        assert_eq!(launches.len(), 50);
        // Known UNHEALTHY: one success does not pass with threshold 2.
        for l in &launches {
            assert!(f.complete(l, true, t).is_none());
        }
    }

    #[test]
    fn removed_instances_are_dropped_and_late_results_ignored() {
        let mut f = Fixture::new(1);
        f.register("a", "127.0.0.1", 80);
        f.register("b", "127.0.0.1", 81);
        f.sync(Duration::ZERO);
        let launches = f.due(Duration::ZERO);
        assert_eq!(launches.len(), 2);
        f.reg.deregister_instance(&f.svc, "a", &Owner::Api).unwrap();
        f.sync(Duration::from_millis(1));
        assert_eq!(f.sched.len(), 1);
        let a = launches.iter().find(|l| port(l) == 80).unwrap();
        assert!(f.complete(a, false, Duration::from_millis(2)).is_none());
        let b = launches.iter().find(|l| port(l) == 81).unwrap();
        assert!(f.complete(b, false, Duration::from_millis(2)).is_some());
        let mut t = Duration::ZERO;
        while t < INTERVAL * 3 {
            t += Duration::from_millis(100);
            for l in f.due(t) {
                assert_eq!(port(&l), 81, "a is never probed again");
                f.complete(&l, true, t);
            }
        }
    }

    #[test]
    fn a_changed_address_is_a_new_check_probed_at_once() {
        let mut f = Fixture::new(3);
        f.register("a", "127.0.0.1", 80);
        f.sync(Duration::ZERO);
        let old = f.due(Duration::ZERO).pop().unwrap();
        f.complete(&old, true, Duration::ZERO).unwrap();
        f.register("a", "127.0.0.2", 8080);
        f.sync(Duration::from_secs(1));
        let new = f.due(Duration::from_secs(1)).pop().expect("probed at once");
        assert_ne!(new.id, old.id);
        assert_eq!(new.endpoint.addr, Some("127.0.0.2:8080".parse().unwrap()));
        // Its first result applies at once despite threshold 3.
        let v = f.complete(&new, false, Duration::from_secs(1)).unwrap();
        assert!(!v.passing);
    }

    #[test]
    fn health_changes_do_not_resync_and_check_changes_do() {
        let mut f = Fixture::new(3);
        f.register("a", "127.0.0.1", 80);
        f.sync(Duration::ZERO);
        let l = f.due(Duration::ZERO).pop().unwrap();
        let v = f.complete(&l, false, Duration::ZERO).unwrap();
        f.reg.apply_probe_verdicts(&[v]).unwrap();
        f.sync(Duration::from_millis(1));
        let due = f.sched.next_due().unwrap();
        assert!(due > f.t0 + INTERVAL / 2, "not reset by its own verdict");

        // A new interval reschedules within it; a new threshold applies.
        let mut check = hc(HealthCheckType::Http, 1);
        check.interval_seconds = Some(1);
        f.reg
            .update_service(
                &f.svc,
                UpdateService {
                    description: None,
                    dns_records: None,
                    health_check_config: Some(check),
                },
                &Owner::Api,
            )
            .unwrap();
        f.sync(Duration::from_millis(2));
        let due = f.sched.next_due().unwrap() - f.t0;
        assert!(due <= Duration::from_millis(1002), "{due:?}");
        let l = f.due(Duration::from_millis(1002)).pop().unwrap();
        assert_eq!(l.timeout, Duration::from_secs(2));
        let v = f.complete(&l, true, Duration::from_millis(1002)).unwrap();
        assert!(v.passing, "threshold 1 now");

        // Switching to TCP is a new check; removing the check drops targets.
        f.reg
            .update_service(
                &f.svc,
                UpdateService {
                    description: None,
                    dns_records: None,
                    health_check_config: Some(hc(HealthCheckType::Tcp, 1)),
                },
                &Owner::Api,
            )
            .unwrap();
        f.sync(Duration::from_secs(2));
        let l = f
            .due(Duration::from_secs(2))
            .pop()
            .expect("new check, at once");
        assert_eq!(l.endpoint.kind, HealthCheckType::Tcp);
        f.reg
            .update_service(
                &f.svc,
                UpdateService {
                    description: None,
                    dns_records: None,
                    health_check_config: None,
                },
                &Owner::Api,
            )
            .unwrap();
        f.sync(Duration::from_secs(3));
        assert!(f.sched.is_empty());
        assert!(f.complete(&l, true, Duration::from_secs(3)).is_none());
        assert_eq!(f.sched.next_due(), None);
    }

    #[test]
    fn a_failed_write_resets_the_verdict_to_the_registry() {
        let mut f = Fixture::new(2);
        f.register("a", "127.0.0.1", 80);
        f.sync(Duration::ZERO);
        let l = f.due(Duration::ZERO).pop().unwrap();
        let v = f.complete(&l, true, Duration::ZERO).unwrap();
        // The write is lost: the registry still has no verdict, so the next
        // result applies at once again.
        f.sched.reset_verdicts(&f.reg.read(), &[v]);
        let l = f.due(INTERVAL).pop().unwrap();
        let v = f.complete(&l, false, INTERVAL).unwrap();
        assert!(!v.passing);
    }

    #[test]
    fn the_heap_is_compacted() {
        let mut f = Fixture::new(1);
        f.register("a", "127.0.0.1", 80);
        f.sync(Duration::ZERO);
        for i in 0..3000u64 {
            // Each interval change pushes a new entry for the same target.
            let mut check = hc(HealthCheckType::Http, 1);
            check.interval_seconds = Some(1 + (i % 2) as u32);
            f.reg
                .update_service(
                    &f.svc,
                    UpdateService {
                        description: None,
                        dns_records: None,
                        health_check_config: Some(check),
                    },
                    &Owner::Api,
                )
                .unwrap();
            f.sync(Duration::from_millis(i));
        }
        assert!(f.sched.heap.len() <= 2 * f.sched.len() + 1025);
        assert_eq!(f.due(Duration::from_secs(10)).len(), 1);
    }
}
