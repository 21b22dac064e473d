//! Who may call, and what they may do: principals with access keys and
//! IAM-shaped policies, read from the files an operator writes (a
//! Kubernetes Secret for the keys, optionally a ConfigMap for the policies)
//! and reloaded when they change.
//!
//! The credentials file (YAML or JSON):
//!
//! ```yaml
//! principals:
//!   - name: inventory-manager            # in audit lines and errors
//!     accessKeys:
//!       - accessKeyId: AKIAINVENTORY0001
//!         secretAccessKey: "…"
//!     policies: [inventory-register]     # names from `policies`
//!     inlinePolicies: []                 # or IAM documents right here
//! policies:                              # optional here, or in the policies file
//!   inventory-register: { "Version": "2012-10-17", "Statement": […] }
//! ```
//!
//! The policies file holds only `policies:`. A principal with no policy may
//! authenticate but is denied everything.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::IntCounterVec;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::policy::{Decision, PolicyError, PolicySet, Request};

/// Why the files were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not valid YAML/JSON of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A policy document is wrong.
    #[error("{path}: policy {name:?}: {source}")]
    Policy {
        /// The file.
        path: PathBuf,
        /// The policy's name (or `principal/inline[i]`).
        name: String,
        /// What is wrong.
        source: PolicyError,
    },
    /// Metrics could not be registered.
    #[error("auth metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    principals: Vec<PrincipalSpec>,
    #[serde(default)]
    policies: HashMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PoliciesFile {
    policies: HashMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrincipalSpec {
    name: String,
    /// None: a principal that acts only inside Waymark (the controller's
    /// identity, `--controller-principal`); it cannot sign requests.
    #[serde(default)]
    access_keys: Vec<KeySpec>,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    inline_policies: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeySpec {
    access_key_id: String,
    secret_access_key: String,
}

/// A principal: its name and its compiled policies.
#[derive(Debug)]
pub struct Principal {
    /// The name operators gave it.
    pub name: String,
    /// Its policies, all together.
    pub policies: PolicySet,
}

/// One version of the configuration.
#[derive(Debug, Default)]
pub struct AuthConfig {
    keys: HashMap<String, (String, Arc<Principal>)>,
    by_name: HashMap<String, Arc<Principal>>,
}

impl AuthConfig {
    /// Parses the credentials file's and the policies file's contents.
    pub fn parse(
        credentials: (&Path, &str),
        policies: Option<(&Path, &str)>,
    ) -> Result<Self, ConfigError> {
        let (cpath, text) = credentials;
        let parse_err = |path: &Path, e: serde_yaml::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let creds: CredentialsFile = serde_yaml::from_str(text).map_err(|e| parse_err(cpath, e))?;
        let mut documents: HashMap<String, (PathBuf, serde_json::Value)> = creds
            .policies
            .into_iter()
            .map(|(k, v)| (k, (cpath.to_path_buf(), v)))
            .collect();
        if let Some((ppath, text)) = policies {
            let file: PoliciesFile = serde_yaml::from_str(text).map_err(|e| parse_err(ppath, e))?;
            for (name, doc) in file.policies {
                if documents.contains_key(&name) {
                    return Err(ConfigError::Parse {
                        path: ppath.to_path_buf(),
                        message: format!("policy {name:?} is also defined in {}", cpath.display()),
                    });
                }
                documents.insert(name, (ppath.to_path_buf(), doc));
            }
        }
        let bad = |message: String| ConfigError::Parse {
            path: cpath.to_path_buf(),
            message,
        };
        let mut keys = HashMap::new();
        let mut by_name = HashMap::new();
        let mut names = HashSet::new();
        for p in creds.principals {
            if p.name.trim().is_empty() {
                return Err(bad("a principal has an empty name".into()));
            }
            if !names.insert(p.name.clone()) {
                return Err(bad(format!("principal {:?} is listed twice", p.name)));
            }
            let mut docs = Vec::new();
            for name in &p.policies {
                let (path, doc) = documents.get(name).ok_or_else(|| {
                    bad(format!(
                        "principal {:?} names unknown policy {name:?}",
                        p.name
                    ))
                })?;
                PolicySet::parse([doc]).map_err(|source| ConfigError::Policy {
                    path: path.clone(),
                    name: name.clone(),
                    source,
                })?;
                docs.push(doc);
            }
            for (i, doc) in p.inline_policies.iter().enumerate() {
                PolicySet::parse([doc]).map_err(|source| ConfigError::Policy {
                    path: cpath.to_path_buf(),
                    name: format!("{}/inlinePolicies[{i}]", p.name),
                    source,
                })?;
                docs.push(doc);
            }
            let policies = PolicySet::parse(docs).expect("each document parsed above");
            let principal = Arc::new(Principal {
                name: p.name.clone(),
                policies,
            });
            by_name.insert(p.name.clone(), Arc::clone(&principal));
            for k in p.access_keys {
                if k.access_key_id.len() < 16
                    || !k.access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(bad(format!(
                        "principal {:?}: access key id {:?} must be 16 or more letters and digits",
                        p.name, k.access_key_id
                    )));
                }
                if k.secret_access_key.len() < 16 {
                    return Err(bad(format!(
                        "principal {:?}: the secret of {} is shorter than 16 characters",
                        p.name, k.access_key_id
                    )));
                }
                if keys
                    .insert(
                        k.access_key_id.clone(),
                        (k.secret_access_key, Arc::clone(&principal)),
                    )
                    .is_some()
                {
                    return Err(bad(format!(
                        "access key id {} is listed twice",
                        k.access_key_id
                    )));
                }
            }
        }
        Ok(Self { keys, by_name })
    }

    /// The principal of that name.
    pub fn principal_named(&self, name: &str) -> Option<Arc<Principal>> {
        self.by_name.get(name).map(Arc::clone)
    }

    /// The secret of an access key.
    pub fn secret(&self, access_key_id: &str) -> Option<String> {
        self.keys.get(access_key_id).map(|(s, _)| s.clone())
    }

    /// The principal an access key belongs to.
    pub fn principal(&self, access_key_id: &str) -> Option<Arc<Principal>> {
        self.keys.get(access_key_id).map(|(_, p)| Arc::clone(p))
    }

    /// How many access keys there are.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

impl Principal {
    /// Decides on a request by this principal.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        self.policies.evaluate(request)
    }
}

/// The live configuration: the files' current version, swapped when they
/// change.
#[derive(Debug)]
pub struct Authority {
    credentials: PathBuf,
    policies: Option<PathBuf>,
    current: RwLock<(Arc<AuthConfig>, [u8; 32])>,
    /// Bumped on every configuration swap (the controller re-plans then).
    version: tokio::sync::watch::Sender<u64>,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl Authority {
    /// Loads the files (start-up fails on any error in them).
    pub fn load(credentials: &Path, policies: Option<&Path>) -> Result<Self, ConfigError> {
        let (config, digest) = Self::read_files(credentials, policies)?;
        Ok(Self {
            credentials: credentials.to_path_buf(),
            policies: policies.map(Path::to_path_buf),
            current: RwLock::new((Arc::new(config), digest)),
            version: tokio::sync::watch::Sender::new(0),
        })
    }

    fn read_files(
        credentials: &Path,
        policies: Option<&Path>,
    ) -> Result<(AuthConfig, [u8; 32]), ConfigError> {
        let (creds, pols, digest) = Self::contents(credentials, policies)?;
        let config = AuthConfig::parse((credentials, &creds), policies.zip(pols.as_deref()))?;
        Ok((config, digest))
    }

    /// The files' contents and their digest.
    fn contents(
        credentials: &Path,
        policies: Option<&Path>,
    ) -> Result<(String, Option<String>, [u8; 32]), ConfigError> {
        let creds = read(credentials)?;
        let pols = policies.map(read).transpose()?;
        let mut hash = Sha256::new();
        hash.update(creds.as_bytes());
        hash.update([0]);
        if let Some(p) = &pols {
            hash.update(p.as_bytes());
        }
        Ok((creds, pols, hash.finalize().into()))
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<AuthConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()).0)
    }

    /// Reads the files again; swaps the configuration when their content
    /// changed and is valid. Returns whether it changed.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        // Content, not modification times: Kubernetes updates a mounted
        // Secret or ConfigMap by swapping a `..data` symlink.
        let (creds, pols, digest) = Self::contents(&self.credentials, self.policies.as_deref())?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == digest {
            return Ok(false);
        }
        let config = AuthConfig::parse(
            (&self.credentials, &creds),
            self.policies.as_deref().zip(pols.as_deref()),
        )?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(config), digest);
        self.version.send_modify(|v| *v += 1);
        Ok(true)
    }

    /// Notified whenever a new configuration takes effect.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Reloads every `interval` until the process ends, counting outcomes in
    /// `waymark_auth_reloads_total{result="ok|refused"}`. A refused version
    /// is logged and the previous one keeps serving.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        prom: &prometheus::Registry,
    ) -> Result<(), ConfigError> {
        let reloads = IntCounterVec::new(
            prometheus::Opts::new(
                "waymark_auth_reloads_total",
                "Changes of the credentials/policies files taken (ok) or refused (the previous version keeps serving).",
            ),
            &["result"],
        )?;
        prom.register(Box::new(reloads.clone()))?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            // A refused version is reported once, not on every tick.
            let mut last_error: Option<String> = None;
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                let outcome = tokio::task::spawn_blocking(move || me.reload()).await;
                match outcome {
                    Ok(Ok(true)) => {
                        last_error = None;
                        reloads.with_label_values(&["ok"]).inc();
                        tracing::info!("credentials and policies reloaded");
                    }
                    Ok(Ok(false)) => last_error = None,
                    Ok(Err(e)) => {
                        let e = e.to_string();
                        if last_error.as_ref() != Some(&e) {
                            reloads.with_label_values(&["refused"]).inc();
                            tracing::error!(error = %e, "credentials/policies change refused; the previous version stays in force");
                            last_error = Some(e);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "reloading credentials failed"),
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
