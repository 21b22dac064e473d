//! The API listener's flags: TLS (certificate and key files, reloaded when
//! they change) and the connection limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tracing::info;

use super::{Error, parse_seconds};
use crate::api::listener::{DEFAULT_MAX_CONNECTIONS, ReloadingCert, Settings, TlsSettings};

/// Flags of the Cloud Map API listener.
#[derive(Debug, Clone, Args)]
pub struct ListenerArgs {
    /// Serve the Cloud Map API over TLS with this PEM certificate chain (end entity first); needs
    /// --tls-key. Reloaded when it changes.
    #[arg(long, env = "WAYMARK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) of --tls-cert. Reloaded when it changes.
    #[arg(long, env = "WAYMARK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds between checks of the TLS certificate and key files for changes. Fractions allowed.
    #[arg(long, env = "WAYMARK_TLS_RELOAD_SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub tls_reload_seconds: Duration,
    /// Most Cloud Map API connections open at once; more wait in the kernel's accept queue.
    #[arg(long, env = "WAYMARK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

impl ListenerArgs {
    /// The listener settings these flags describe, with the certificate
    /// and key loaded, so a bad file stops start-up before anything binds.
    pub fn settings(&self) -> Result<Settings, Error> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let certs = ReloadingCert::load(cert, key)?;
                info!(cert = %cert.display(), key = %key.display(), "Cloud Map API serves TLS");
                Some(TlsSettings {
                    certs: Arc::new(certs),
                    reload_every: self.tls_reload_seconds,
                })
            }
            (None, None) => None,
            // clap's `requires` refuses these on the command line; this
            // catches settings built in code, which must not fall back to
            // plain HTTP.
            _ => return Err(Error::TlsFlags),
        };
        Ok(Settings {
            max_connections: self.max_connections as usize,
            tls,
        })
    }
}
