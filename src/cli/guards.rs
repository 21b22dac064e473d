//! The API's audit-log and rate-limit flags.

use std::num::NonZeroU32;
use std::sync::Arc;

use clap::Args;
use tracing::info;

use super::Error;
use crate::api::{AuditConfig, AuditLog, AuditWriter, RateLimit, Sink, Throttle};
use crate::dns::{ResponseRateLimit, RrlConfig};

/// Flags of the audit log.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Write one JSON line (CloudTrail's fields) per mutating or refused API call to this file
    /// (appended; a named pipe works), or `-` for standard output. Default: no audit log.
    #[arg(long, env = "WAYMARK_AUDIT_LOG")]
    pub audit_log: Option<String>,
    /// Record reads (Get*, List*, DiscoverInstances) in the audit log too.
    #[arg(long, env = "WAYMARK_AUDIT_READS", requires = "audit_log")]
    pub audit_reads: bool,
    /// Audit lines queued for the writer; when the sink is slower, new lines are dropped and
    /// counted in waymark_audit_dropped_total rather than stalling the API.
    #[arg(long, env = "WAYMARK_AUDIT_BUFFER", default_value_t = 8192,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub audit_buffer: u32,
}

impl AuditArgs {
    /// Opens the audit log, when one is asked for.
    pub fn open(
        &self,
        region: &str,
        account: &str,
        prom: &prometheus::Registry,
    ) -> Result<Option<(AuditLog, AuditWriter)>, Error> {
        let Some(sink) = &self.audit_log else {
            return Ok(None);
        };
        let config = AuditConfig {
            sink: Sink::parse(sink),
            reads: self.audit_reads,
            buffer: self.audit_buffer as usize,
            region: region.to_string(),
            account: account.to_string(),
        };
        let opened = AuditLog::open(&config, prom)?;
        info!(sink = %sink, reads = self.audit_reads, "audit log enabled");
        Ok(Some(opened))
    }
}

/// Flags of the API's request limits.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Requests per second one caller may make (per principal; per client address with
    /// --auth none), fractions allowed. Above it calls get ThrottlingException, which the AWS
    /// SDKs retry with backoff. Default: no limit.
    #[arg(long, env = "WAYMARK_RATE_LIMIT", value_parser = parse_rate)]
    pub rate_limit: Option<f64>,
    /// Calls one caller may make at once above --rate-limit (default: the rate, at least 1).
    #[arg(long, env = "WAYMARK_RATE_LIMIT_BURST", requires = "rate_limit")]
    pub rate_limit_burst: Option<NonZeroU32>,
}

impl LimitArgs {
    /// The rate limiter, when a rate is set.
    pub fn throttle(&self, prom: &prometheus::Registry) -> Result<Option<Throttle>, Error> {
        let Some(per_second) = self.rate_limit else {
            return Ok(None);
        };
        let burst = self.rate_limit_burst.unwrap_or_else(|| {
            NonZeroU32::new(per_second.ceil().clamp(1.0, u32::MAX as f64) as u32)
                .unwrap_or(NonZeroU32::MIN)
        });
        let limit = RateLimit { per_second, burst };
        let throttle = Throttle::new(limit, prom).map_err(|e| Error::Limits(e.to_string()))?;
        info!(per_second, burst = burst.get(), "API rate limit per caller");
        Ok(Some(throttle))
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.001..=1e9).contains(&v) => Ok(v),
        _ => Err("expected requests per second between 0.001 and 1e9 (fractions allowed)".into()),
    }
}

/// Flags of DNS response rate limiting.
#[derive(Debug, Clone, Args)]
pub struct DnsLimitArgs {
    /// UDP responses per second to one client network (an IPv4 /24, an IPv6 /56); above it
    /// responses are dropped, or sent truncated (see --dns-rate-limit-slip) so real clients
    /// retry over TCP, which is never limited. Default: no limit.
    #[arg(long, env = "WAYMARK_DNS_RATE_LIMIT")]
    pub dns_rate_limit: Option<NonZeroU32>,
    /// Responses to one client network at once above --dns-rate-limit (default: the rate).
    #[arg(
        long,
        env = "WAYMARK_DNS_RATE_LIMIT_BURST",
        requires = "dns_rate_limit"
    )]
    pub dns_rate_limit_burst: Option<NonZeroU32>,
    /// Every Nth limited response is sent truncated (TC) instead of dropped; 0: drop all.
    #[arg(long, env = "WAYMARK_DNS_RATE_LIMIT_SLIP", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub dns_rate_limit_slip: u32,
}

impl DnsLimitArgs {
    /// The response rate limiter, when a rate is set.
    pub fn limiter(
        &self,
        prom: &prometheus::Registry,
    ) -> Result<Option<Arc<ResponseRateLimit>>, Error> {
        let Some(per_second) = self.dns_rate_limit else {
            return Ok(None);
        };
        let config = RrlConfig {
            per_second,
            burst: self.dns_rate_limit_burst.unwrap_or(per_second),
            slip: self.dns_rate_limit_slip,
        };
        info!(
            per_second = per_second.get(),
            burst = config.burst.get(),
            slip = config.slip,
            "DNS response rate limit per client network"
        );
        ResponseRateLimit::new(config, prom)
            .map(Some)
            .map_err(|e| Error::Limits(e.to_string()))
    }
}
