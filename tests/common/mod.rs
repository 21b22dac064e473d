//! The shared harness of Waymark's Rust integration tests: a real Kubernetes control plane
//! (etcd + kube-apiserver + kube-controller-manager on loopback, started by
//! `scripts/controlplane.sh`), one per test binary, shared by all of its tests.
//!
//! ```ignore
//! mod common;
//!
//! #[test]
//! fn something() {
//!     let cp = common::control_plane();
//!     cp.install_crds();
//!     let ns = cp.create_namespace("something");
//!     let out = cp.kubectl(&["-n", &ns.name, "get", "pods"]);
//!     assert!(out.status.success(), "{}", common::stderr(&out));
//! }
//! ```
//!
//! - `WAYMARK_TEST_KUBECONFIG=/path/to/kubeconfig` runs the tests against that cluster instead
//!   of starting one (objects are then cleaned up by the guards below).
//! - Otherwise `scripts/controlplane.sh up DIR --owner-pid <this pid>` starts one in
//!   `$TMPDIR/waymark-test-controlplanes/<pid>-<start time>-<mode>`; its watchdog stops it when
//!   this process exits, and the next test run deletes the directories of dead owners.
//!   `WAYMARK_TEST_KEEP_CONTROLPLANE_DIRS=1` keeps them (logs, etcd data) for debugging.
//! - Tests run in parallel: every test creates its own objects, named with [`unique_name`].
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Environment variable naming the kubeconfig of an existing cluster to test against.
pub const KUBECONFIG_ENV: &str = "WAYMARK_TEST_KUBECONFIG";
/// Environment variable that, when set, keeps the directories of stopped control planes.
pub const KEEP_DIRS_ENV: &str = "WAYMARK_TEST_KEEP_CONTROLPLANE_DIRS";
/// Names of the CRDs in `crds/`, waited for by [`ControlPlane::install_crds`].
pub const WAYMARK_CRDS: &[&str] = &[
    "waymarknamespaces.waymark.dev",
    "servicediscoveries.waymark.dev",
];

/// The repository root (the directory holding Cargo.toml).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The control plane of this test binary, in the default (minimal) mode: etcd,
/// kube-apiserver and a kube-controller-manager running only the ServiceAccount, root CA and
/// namespace controllers. Started on first use; later calls (from any thread) share it.
///
/// Panics, with the script's output, when the control plane cannot be started.
pub fn control_plane() -> &'static ControlPlane {
    static MINIMAL: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    get(&MINIMAL, Mode::Minimal)
}

/// Like [`control_plane`], but with every kube-controller-manager controller (garbage
/// collector, EndpointSlices, Deployments, ...) except node lifecycle. A separate control
/// plane from [`control_plane`]'s; use one or the other in a test binary.
pub fn control_plane_with_controller_manager() -> &'static ControlPlane {
    static FULL: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    get(&FULL, Mode::Full)
}

/// A second, separate control plane in the default mode — another cluster, for tests of
/// several clusters sharing one registry. Always started by this process (even when
/// `WAYMARK_TEST_KUBECONFIG` names a cluster for [`control_plane`]), so the two never
/// are the same cluster.
pub fn second_control_plane() -> &'static ControlPlane {
    static SECOND: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    get(&SECOND, Mode::Second)
}

fn get(cell: &'static OnceLock<Result<ControlPlane, String>>, mode: Mode) -> &'static ControlPlane {
    // The Result is stored (not unwrapped inside get_or_init) so that a failed start is
    // reported to every test instead of being retried by each of them.
    match cell.get_or_init(|| ControlPlane::start(mode)) {
        Ok(cp) => cp,
        Err(err) => panic!("test control plane unavailable: {err}"),
    }
}

/// A unique lowercase name for a test object (a DNS label of at most 63 characters):
/// `<prefix>-<suffix>`, unique across threads, processes and runs against the same cluster.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // The time part repeats every ~73 minutes (2^32 us); a collision needs the same pid, the
    // same counter value and the same microsecond in that cycle.
    let suffix = format!("{:x}{:08x}{n}", std::process::id(), (nanos >> 10) as u32);
    let max_prefix = 62 - suffix.len();
    let prefix: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(max_prefix)
        .collect();
    let prefix = prefix.trim_matches('-');
    if prefix.is_empty() {
        format!("t{suffix}")
    } else {
        format!("{prefix}-{suffix}")
    }
}

/// Lossy UTF-8 stderr of a command.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Lossy UTF-8 stdout of a command.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Minimal,
    Full,
    /// Minimal, and never the external cluster.
    Second,
}

/// A Kubernetes control plane the tests talk to with `kubectl`.
#[derive(Debug)]
pub struct ControlPlane {
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The directory given to `controlplane.sh up` (certificates, logs, etcd data), or `None`
    /// for a cluster from `WAYMARK_TEST_KUBECONFIG`.
    pub dir: Option<PathBuf>,
    /// Variables of `DIR/env` (`WAYMARK_APISERVER_URL`, `WAYMARK_CONTROLPLANE_BIN_DIR`, ...);
    /// empty for an external cluster.
    pub env: BTreeMap<String, String>,
    kubectl: OsString,
    crds: OnceLock<Result<(), String>>,
}

impl ControlPlane {
    fn start(mode: Mode) -> Result<Self, String> {
        let kubectl = std::env::var_os("WAYMARK_KUBECTL").unwrap_or_else(|| "kubectl".into());
        if let Some(kubeconfig) = std::env::var_os(KUBECONFIG_ENV).filter(|_| mode != Mode::Second)
        {
            eprintln!("[harness] using the cluster of {KUBECONFIG_ENV}={kubeconfig:?}");
            return Ok(Self {
                kubeconfig: kubeconfig.into(),
                dir: None,
                env: BTreeMap::new(),
                kubectl,
                crds: OnceLock::new(),
            });
        }

        let root = std::env::temp_dir().join("waymark-test-controlplanes");
        std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        if std::env::var_os(KEEP_DIRS_ENV).is_none() {
            sweep_stale_dirs(&root);
        }
        let pid = std::process::id();
        let start_time = proc_start_time(pid).ok_or("cannot read /proc/self/stat")?;
        let mode_name = match mode {
            Mode::Minimal => "minimal",
            Mode::Full => "full",
            Mode::Second => "second",
        };
        let dir = root.join(format!("{pid}-{start_time}-{mode_name}"));

        let script = repo_root().join("scripts/controlplane.sh");
        let mut cmd = Command::new(&script);
        cmd.arg("up").arg(&dir);
        if mode == Mode::Full {
            cmd.arg("--with-controller-manager");
        }
        cmd.arg("--owner-pid").arg(pid.to_string());
        eprintln!("[harness] starting the control plane: {cmd:?}");
        let started = Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`{} up {}` failed ({}):\n{}",
                script.display(),
                dir.display(),
                out.status,
                stderr(&out)
            ));
        }
        eprintln!(
            "[harness] control plane up in {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );

        let env_text = std::fs::read_to_string(dir.join("env"))
            .map_err(|e| format!("read {}/env: {e}", dir.display()))?;
        let env = parse_env(&env_text);
        let kubectl = std::env::var_os("WAYMARK_KUBECTL")
            .or_else(|| {
                env.get("WAYMARK_KUBECTL")
                    .filter(|k| !k.is_empty())
                    .map(Into::into)
            })
            .unwrap_or(kubectl);
        Ok(Self {
            kubeconfig: dir.join("kubeconfig"),
            dir: Some(dir),
            env,
            kubectl,
            crds: OnceLock::new(),
        })
    }

    /// Whether this is a cluster from `WAYMARK_TEST_KUBECONFIG` (shared, so tests clean up).
    pub fn is_external(&self) -> bool {
        self.dir.is_none()
    }

    /// A `kubectl` command bound to this control plane (`--kubeconfig`, and a private
    /// discovery cache for a control plane we started), stdin closed.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        if let Some(dir) = &self.dir {
            // Ports are reused across runs: never trust another run's discovery cache.
            cmd.arg("--cache-dir").arg(dir.join("kubectl-cache"));
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `kubectl <args>` against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = self.kubectl_command();
        cmd.args(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }

    /// Runs `kubectl <args>` with `input` on stdin.
    pub fn kubectl_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut cmd = self.kubectl_command();
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_owned();
        // Write from another thread so that a child filling its stdout pipe cannot deadlock us.
        let writer = std::thread::spawn(move || {
            // A child that exits early closes the pipe; its output tells what went wrong.
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
        writer.join().expect("stdin writer thread");
        out
    }

    /// `kubectl apply -f -` with `yaml` on stdin.
    pub fn kubectl_apply_stdin(&self, yaml: &str) -> Output {
        self.kubectl_with_stdin(&["apply", "-f", "-"], yaml)
    }

    /// Runs `kubectl <args>`, panics (with stderr) unless it succeeds, returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Applies `crds/` (`kubectl apply -f crds/`) and waits until every Waymark CRD is
    /// Established. Done once per control plane; idempotent against a shared cluster.
    pub fn install_crds(&self) {
        let result = self.crds.get_or_init(|| {
            let crds_dir = repo_root().join("crds");
            let crds_dir = crds_dir.to_str().ok_or("non-UTF-8 repository path")?;
            // Another process (or test) applying at the same moment makes a client-side
            // apply fail with AlreadyExists or Conflict; applying again then succeeds.
            let mut attempt = 1;
            loop {
                let out = self.kubectl(&["apply", "-f", crds_dir]);
                if out.status.success() {
                    break;
                }
                let err = stderr(&out);
                let raced = err.contains("AlreadyExists") || err.contains("Conflict");
                if !raced || attempt == 5 {
                    return Err(format!("kubectl apply -f {crds_dir} failed:\n{err}"));
                }
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            self.wait_established(WAYMARK_CRDS)
        });
        if let Err(err) = result {
            panic!("installing the Waymark CRDs failed: {err}");
        }
    }

    /// Waits (up to 60 s) until the named CRDs have the condition `Established`.
    pub fn wait_established(&self, crd_names: &[&str]) -> Result<(), String> {
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        let names: Vec<String> = crd_names.iter().map(|n| format!("crd/{n}")).collect();
        args.extend(names.iter().map(String::as_str));
        let out = self.kubectl(&args);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("kubectl {args:?} failed:\n{}", stderr(&out)))
        }
    }

    /// Creates a Kubernetes namespace with a [`unique_name`]; it is deleted when the guard
    /// drops if the cluster is external.
    pub fn create_namespace(&'static self, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        self.kubectl_ok(&["create", "namespace", &name]);
        TestNamespace {
            name: name.clone(),
            _cleanup: Cleanup::new(self, &["namespace", &name]),
        }
    }
}

/// A Kubernetes namespace created for one test.
#[derive(Debug)]
pub struct TestNamespace {
    /// The namespace name.
    pub name: String,
    _cleanup: Cleanup,
}

/// Deletes an object (`kubectl delete <args>`) when dropped, on external clusters only: a
/// control plane started for this process dies with it.
#[derive(Debug)]
pub struct Cleanup {
    cp: &'static ControlPlane,
    args: Vec<String>,
}

impl Cleanup {
    /// Remembers `kubectl delete <args>` (e.g. `["waymarknamespaces.waymark.dev", "x"]`).
    pub fn new(cp: &'static ControlPlane, args: &[&str]) -> Self {
        Self {
            cp,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.cp.is_external() {
            return;
        }
        let mut args = vec!["delete", "--ignore-not-found", "--wait=false"];
        args.extend(self.args.iter().map(String::as_str));
        let out = self.cp.kubectl(&args);
        if !out.status.success() {
            eprintln!("[harness] cleanup {args:?} failed: {}", stderr(&out));
        }
    }
}

/// Parses the `export KEY=VALUE` lines of `DIR/env` (values are `printf %q` quoted; the
/// paths and URLs there need at most backslash unescaping).
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let mut value = String::with_capacity(v.len());
            let mut chars = v.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => {}
                    c => value.push(c),
                }
            }
            (k.to_owned(), value)
        })
        .collect()
}

/// Start time (field 22 of /proc/PID/stat) of a live process.
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Deletes the directories of control planes whose owner process is gone (after making sure,
/// with the idempotent `controlplane.sh down`, that nothing of them runs any more).
fn sweep_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.splitn(3, '-');
        let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            continue;
        };
        if proc_start_time(pid) == Some(start) {
            continue; // its owner (another test binary) still runs
        }
        let dir = entry.path();
        let down = Command::new(repo_root().join("scripts/controlplane.sh"))
            .arg("down")
            .arg(&dir)
            .stdin(Stdio::null())
            .output();
        match down {
            Ok(out) if out.status.success() => {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    eprintln!("[harness] cannot remove {}: {e}", dir.display());
                }
            }
            Ok(out) => eprintln!(
                "[harness] `controlplane.sh down {}` failed, keeping it: {}",
                dir.display(),
                stderr(&out)
            ),
            Err(e) => eprintln!("[harness] cannot run controlplane.sh: {e}"),
        }
    }
}
