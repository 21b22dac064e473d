//! The API's access flags: how callers authenticate, where keys and policies
//! come from, and the guard that keeps an unauthenticated API off the
//! network unless an operator insists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tracing::{info, warn};

use super::{Error, parse_seconds};
use crate::api::Access;
use crate::auth::Authority;

/// How API callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// AWS Signature Version 4 with the keys of `--auth-credentials`; each
    /// call allowed by its principal's policies.
    Sigv4,
    /// No authentication: anyone who reaches the API port may do anything.
    None,
}

/// Flags of API access control.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// How API callers are authenticated (default: `sigv4` when --auth-credentials is given, else `none`).
    #[arg(long, env = "WAYMARK_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// Credentials file (YAML/JSON: principals, their access keys and policies), reloaded when it changes.
    #[arg(long, env = "WAYMARK_AUTH_CREDENTIALS")]
    pub auth_credentials: Option<PathBuf>,
    /// Optional policies file (`policies:` by name), reloaded when it changes.
    #[arg(long, env = "WAYMARK_AUTH_POLICIES")]
    pub auth_policies: Option<PathBuf>,
    /// Seconds between checks of the credentials and policies files for changes.
    #[arg(long, env = "WAYMARK_AUTH_RELOAD_SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub auth_reload_seconds: Duration,
    /// Allow `--auth none` on a non-loopback API address (anyone on the network may rewrite the registry).
    #[arg(long, env = "WAYMARK_AUTH_ALLOW_UNAUTHENTICATED_REMOTE")]
    pub allow_unauthenticated_remote: bool,
}

impl AuthArgs {
    /// The access control these flags describe for an API on `api_addr`
    /// in `region`, with the files loaded, checked before anything is bound
    /// or opened so a bad setting stops start-up at once. Under SigV4 the
    /// [`Authority`] is returned too: [`AuthArgs::watch`] starts its reloader.
    pub fn access(
        &self,
        api_addr: SocketAddr,
        region: &str,
    ) -> Result<(Access, Option<Arc<Authority>>), Error> {
        let mode = self.auth.unwrap_or(if self.auth_credentials.is_some() {
            AuthMode::Sigv4
        } else {
            AuthMode::None
        });
        match mode {
            AuthMode::None => {
                if self.auth_credentials.is_some() || self.auth_policies.is_some() {
                    return Err(Error::Access(
                        "--auth none takes no --auth-credentials or --auth-policies".into(),
                    ));
                }
                if !api_addr.ip().is_loopback() && !self.allow_unauthenticated_remote {
                    return Err(Error::Access(format!(
                        "refusing to serve the Cloud Map API without authentication on {api_addr}: \
                         anyone who reaches it could rewrite the registry. Give --auth-credentials \
                         (SigV4), listen on loopback, or pass --allow-unauthenticated-remote"
                    )));
                }
                warn!(
                    %api_addr,
                    "the Cloud Map API is UNAUTHENTICATED (--auth none): every caller may do anything"
                );
                Ok((Access::Open, None))
            }
            AuthMode::Sigv4 => {
                let Some(credentials) = &self.auth_credentials else {
                    return Err(Error::Access(
                        "--auth sigv4 needs --auth-credentials".into(),
                    ));
                };
                let authority = Arc::new(
                    Authority::load(credentials, self.auth_policies.as_deref())
                        .map_err(|e| Error::Access(e.to_string()))?,
                );
                info!(
                    keys = authority.current().key_count(),
                    credentials = %credentials.display(),
                    "Cloud Map API requires SigV4 signatures"
                );
                Ok((Access::sigv4(region, authority.clone()), Some(authority)))
            }
        }
    }

    /// Starts reloading `authority`'s files every `--auth-reload-seconds`,
    /// counting reloads in `prom`.
    pub fn watch(
        &self,
        authority: &Arc<Authority>,
        prom: &prometheus::Registry,
    ) -> Result<(), Error> {
        authority
            .spawn_reloader(self.auth_reload_seconds, prom)
            .map_err(|e| Error::Access(e.to_string()))
    }
}
