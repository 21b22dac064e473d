//! A real etcd for the shared-store tests: one member or a cluster of
//! several on free loopback ports, built from its Go module by
//! `scripts/build-controlplane.sh` (cached outside the repository), each
//! member killable and restartable, and an etcd client for what the tests
//! do to etcd directly (compaction, foreign keys).
#![allow(dead_code)] // each test binary uses a different part of it

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, http_get};

/// The etcd binary: `$WAYMARK_ETCD_BIN`, else the one the control-plane
/// build script caches (building it on first use).
pub fn etcd_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("WAYMARK_ETCD_BIN") {
            return PathBuf::from(p);
        }
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/build-controlplane.sh");
        let out = Command::new(&script)
            .arg("--print-bin-dir")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/build-controlplane.sh");
        assert!(out.status.success(), "building etcd failed");
        let dir = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(dir.trim()).join("etcd")
    })
}

/// One etcd member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// An etcd cluster on loopback; every member is killed on drop.
pub struct Etcd {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    initial_cluster: String,
    fsync: bool,
}

impl Etcd {
    /// A one-member etcd.
    pub fn start() -> Self {
        Self::cluster(1)
    }

    /// A cluster of `n` members (fsync off: the tests are about Waymark's
    /// behaviour, and fsync dominates etcd's latency on a small machine).
    pub fn cluster(n: usize) -> Self {
        Self::cluster_with(n, false)
    }

    /// A cluster of `n` members, fsyncing every write when `fsync` (benchmarks).
    pub fn cluster_with(n: usize, fsync: bool) -> Self {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let members: Vec<Member> = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                    log: dir.path().join(format!("m{i}.log")),
                })
                .collect();
            let initial_cluster = members
                .iter()
                .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
                .collect::<Vec<_>>()
                .join(",");
            let mut etcd = Self {
                members,
                dir,
                initial_cluster,
                fsync,
            };
            for i in 0..n {
                etcd.spawn(i, true);
            }
            if etcd.wait_healthy(Duration::from_secs(30)) {
                return etcd;
            }
            // A port taken by a parallel test: try again with new ones.
            let logs = etcd.logs();
            if !logs.contains("address already in use") {
                panic!("etcd did not become healthy:\n{logs}");
            }
        }
        panic!("no free ports for etcd after 5 attempts");
    }

    fn spawn(&mut self, i: usize, new: bool) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let mut cmd = Command::new(etcd_bin());
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client_port),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
                "--initial-cluster",
                &self.initial_cluster,
                "--initial-cluster-state",
                if new { "new" } else { "existing" },
                "--initial-cluster-token",
                "waymark-test",
                "--log-level",
                "warn",
            ]);
        if !self.fsync {
            cmd.arg("--unsafe-no-fsync");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i].child = Some(child);
    }

    /// Waits until every running member reports healthy.
    pub fn wait_healthy(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut all = true;
            for m in &mut self.members {
                let Some(child) = m.child.as_mut() else {
                    continue;
                };
                if child.try_wait().unwrap().is_some() {
                    return false;
                }
                let ok = http_get(m.client_port, "/health")
                    .is_some_and(|(s, body)| s == 200 && body.contains("true"));
                all &= ok;
            }
            if all {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `etcd://127.0.0.1:<port>,…` of every member.
    pub fn url(&self) -> String {
        self.url_of(&(0..self.members.len()).collect::<Vec<_>>())
    }

    /// `etcd://…` of the chosen members only.
    pub fn url_of(&self, members: &[usize]) -> String {
        let hosts: Vec<String> = members
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.members[i].client_port))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i, false);
    }

    /// An etcd client connected to the running members.
    pub async fn client(&self) -> etcd_client::Client {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect();
        etcd_client::Client::connect(endpoints, None).await.unwrap()
    }

    /// Compacts the history up to the current revision (physically): a
    /// watch behind it is cancelled with the compaction revision.
    pub async fn compact(&self) -> i64 {
        let mut client = self.client().await;
        let rev = client
            .get("/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        client
            .compact(
                rev,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .unwrap();
        rev
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- etcd {} ---\n{}",
                    m.name,
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
