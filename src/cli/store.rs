//! Where the registry lives (`--store`, `--data-dir`, the `--etcd-*` flags)
//! and `waymark store copy`, which moves a registry between stores.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::parse_seconds;
use crate::registry::{self, RedbStore, Store, StoreError};

/// Where the registry lives: the embedded store (one replica) or etcd
/// (several replicas, several clusters).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `embedded` (the database in --data-dir) or `etcd://host:port[,host:port…]` (a registry
    /// shared by every replica and cluster pointed at the same etcd and --etcd-prefix).
    #[arg(long = "store", env = "WAYMARK_STORE", default_value = "embedded", value_parser = parse_store)]
    pub store: StoreKind,
    /// Directory of the embedded registry database; created if missing.
    #[arg(long, env = "WAYMARK_DATA_DIR", default_value = "waymark-data")]
    pub data_dir: PathBuf,
    /// How to reach etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// How to reach etcd (for `--store etcd://…` and `waymark store copy`).
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// Key prefix of the registry in etcd (several registries can share one etcd).
    #[arg(long, env = "WAYMARK_ETCD_PREFIX", default_value = "/waymark/", value_parser = parse_prefix)]
    pub etcd_prefix: String,
    /// CA bundle that signed the etcd servers' certificates (turns TLS on).
    #[arg(long, env = "WAYMARK_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd (PEM; with --etcd-key; turns TLS on).
    #[arg(long, env = "WAYMARK_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    /// Key of the etcd client certificate (PEM).
    #[arg(long, env = "WAYMARK_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user name (with --etcd-password).
    #[arg(long, env = "WAYMARK_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// etcd password (prefer the WAYMARK_ETCD_PASSWORD environment variable).
    #[arg(long, env = "WAYMARK_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// Seconds an etcd request may take before it fails (retryably).
    #[arg(long, env = "WAYMARK_ETCD_TIMEOUT_SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub etcd_timeout_seconds: Duration,
    /// Seconds a replica may go without confirming it holds etcd's latest state before
    /// `/readyz` and `waymark_store_stale` report it stale.
    #[arg(long, env = "WAYMARK_STALE_AFTER_SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub stale_after_seconds: Duration,
    /// Most operations in one etcd transaction: etcd's own --max-txn-ops (128 unless raised).
    /// Larger controller syncs are split into several transactions.
    #[arg(long, env = "WAYMARK_ETCD_MAX_TXN_OPS", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(8..=1_000_000))]
    pub etcd_max_txn_ops: u32,
}

/// The kind of store `--store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded database in `--data-dir`.
    Embedded,
    /// etcd at these `host:port` endpoints.
    Etcd(Vec<String>),
}

fn parse_store(s: &str) -> Result<StoreKind, String> {
    if s == "embedded" {
        return Ok(StoreKind::Embedded);
    }
    registry::EtcdConfig::from_url(s).map(|c| StoreKind::Etcd(c.endpoints))
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(
            "an etcd prefix is a non-empty key prefix without spaces, such as /waymark/".into(),
        );
    }
    Ok(s.to_string())
}

impl EtcdArgs {
    /// The store at these endpoints, under `prefix` (default --etcd-prefix).
    fn connect(
        &self,
        endpoints: &[String],
        prefix: Option<&str>,
    ) -> Result<Box<dyn Store>, registry::Error> {
        let any_tls = self.etcd_ca.is_some() || self.etcd_cert.is_some() || self.etcd_key.is_some();
        let tls = any_tls.then(|| registry::EtcdTls {
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
        });
        let user = match (&self.etcd_username, &self.etcd_password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(StoreError::Refused(
                    "--etcd-username and --etcd-password go together".into(),
                )
                .into());
            }
        };
        let config = registry::EtcdConfig {
            endpoints: endpoints.to_vec(),
            prefix: prefix.unwrap_or(&self.etcd_prefix).to_string(),
            tls,
            user,
            request_timeout: self.etcd_timeout_seconds,
            stale_after: self.stale_after_seconds,
            max_txn_ops: self.etcd_max_txn_ops as usize,
        };
        Ok(Box::new(registry::EtcdStore::connect(config)?))
    }
}

impl StoreArgs {
    /// Opens the store these flags name. Blocking (it may read a file or
    /// connect): call it off the async workers.
    pub fn open(&self) -> Result<Box<dyn Store>, registry::Error> {
        match &self.store {
            StoreKind::Embedded => Ok(Box::new(RedbStore::open(&self.data_dir)?)),
            StoreKind::Etcd(endpoints) => self.etcd.connect(endpoints, None),
        }
    }
}

/// Subcommands of `waymark store`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a registry between stores — an embedded data directory and etcd, either way —
    /// with its ids, revisions, operation records and tags. Stop every waymark using the
    /// target first.
    Copy(CopyArgs),
}

/// Flags of `waymark store copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The registry to copy: a data directory, or etcd://host:port[,…].
    #[arg(long)]
    pub from: String,
    /// Where to copy it: a data directory (created if missing), or etcd://host:port[,…].
    #[arg(long)]
    pub to: String,
    /// Key prefix of the source in etcd (default: --etcd-prefix).
    #[arg(long, value_parser = parse_prefix)]
    pub from_prefix: Option<String>,
    /// Key prefix of the target in etcd (default: --etcd-prefix).
    #[arg(long, value_parser = parse_prefix)]
    pub to_prefix: Option<String>,
    /// Remove whatever the target holds first (by default a non-empty target is refused).
    #[arg(long)]
    pub replace: bool,
    /// How to reach etcd (either side).
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// Opens one side of a copy; a source directory must already hold a registry.
fn open_side(
    location: &str,
    prefix: Option<&str>,
    etcd: &EtcdArgs,
    source: bool,
) -> Result<Box<dyn Store>, registry::Error> {
    if location.starts_with("etcd://") {
        let endpoints = parse_store(location).map_err(StoreError::Refused)?;
        let StoreKind::Etcd(endpoints) = endpoints else {
            unreachable!("an etcd:// location parses as etcd")
        };
        return etcd.connect(&endpoints, prefix);
    }
    let dir = Path::new(location);
    if source && !dir.join(registry::store::DB_FILE).exists() {
        return Err(StoreError::Foreign {
            path: dir.to_path_buf(),
            reason: format!("there is no {} to copy from", registry::store::DB_FILE),
        }
        .into());
    }
    Ok(Box::new(RedbStore::open(dir)?))
}

/// `waymark store copy`: prints progress on stderr and a summary on stdout.
pub fn copy(args: CopyArgs) -> Result<(), registry::Error> {
    let from = open_side(&args.from, args.from_prefix.as_deref(), &args.etcd, true)?;
    let to = open_side(&args.to, args.to_prefix.as_deref(), &args.etcd, false)?;
    let started = std::time::Instant::now();
    let mut progress = super::Progress::new("copying records");
    let report = registry::store::copy(from.as_ref(), to.as_ref(), args.replace, |done, total| {
        progress.at(done, total);
    })?;
    progress.finish();
    println!(
        "copied {} namespaces, {} services, {} instances and {} operation records from {} to {} in {:.1}s{}",
        report.namespaces,
        report.services,
        report.instances,
        report.operations,
        from.describe(),
        to.describe(),
        started.elapsed().as_secs_f64(),
        if report.removed > 0 {
            format!(" (removed {} records the target held)", report.removed)
        } else {
            String::new()
        }
    );
    Ok(())
}
