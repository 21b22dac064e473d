//! What to probe for one instance, derived from its service's
//! `HealthCheckConfig` and its attributes (pure: no I/O).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::registry::model::{Attributes, HealthCheckConfig, HealthCheckType};
use crate::registry::validate::{AWS_INSTANCE_IPV4, AWS_INSTANCE_IPV6, AWS_INSTANCE_PORT};

/// Interval and timeout for checks whose config sets none (services created
/// through the Cloud Map API; a ServiceDiscovery always sets both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Time between two probes of one instance.
    pub interval: Duration,
    /// Time a probe may take before it counts as a failure.
    pub timeout: Duration,
}

/// Where and how one instance is probed. Two targets with equal endpoints
/// are the same check; a changed endpoint starts a new check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Protocol.
    pub kind: HealthCheckType,
    /// `AWS_INSTANCE_IPV4` (else `AWS_INSTANCE_IPV6`) and `AWS_INSTANCE_PORT`.
    /// `None` when the instance has no usable address or port (registered
    /// before the service got its check): such an instance fails its check.
    pub addr: Option<SocketAddr>,
    /// Request path of HTTP and HTTPS checks (`/` by default).
    pub path: String,
}

impl Endpoint {
    /// The endpoint of an instance of a service with `hc`.
    pub fn of(hc: &HealthCheckConfig, attributes: &Attributes) -> Self {
        let ip = attributes
            .get(AWS_INSTANCE_IPV4)
            .and_then(|v| v.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4))
            .or_else(|| {
                attributes
                    .get(AWS_INSTANCE_IPV6)
                    .and_then(|v| v.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))
            });
        let port = attributes
            .get(AWS_INSTANCE_PORT)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|p| *p != 0);
        let path = match hc.kind {
            HealthCheckType::Tcp => String::new(),
            _ => hc.resource_path.clone().unwrap_or_else(|| "/".into()),
        };
        Self {
            kind: hc.kind,
            addr: ip.zip(port).map(|(ip, port)| SocketAddr::new(ip, port)),
            path,
        }
    }

    /// The `Host` header of an HTTP(S) probe: the address, bracketed for
    /// IPv6, with the port unless it is the scheme's default — what Route 53
    /// sends for a check without a domain name.
    pub fn host_header(&self) -> Option<String> {
        let addr = self.addr?;
        let host = match addr.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let default_port = match self.kind {
            HealthCheckType::Http => 80,
            HealthCheckType::Https => 443,
            HealthCheckType::Tcp => return None,
        };
        Some(if addr.port() == default_port {
            host
        } else {
            format!("{host}:{}", addr.port())
        })
    }
}

/// How often and how patiently one instance is probed, and how many
/// consecutive results flip its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time between two probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Consecutive results needed to change the verdict (1–10).
    pub threshold: u8,
}

impl Timing {
    /// The timing of a check: the config's values, else the defaults; the
    /// threshold defaults to 1 (Cloud Map's default) and is kept in 1–10.
    pub fn of(hc: &HealthCheckConfig, defaults: &Defaults) -> Self {
        let secs = |v: Option<u32>| v.filter(|s| *s > 0).map(|s| Duration::from_secs(s.into()));
        Self {
            interval: secs(hc.interval_seconds).unwrap_or(defaults.interval),
            timeout: secs(hc.timeout_seconds).unwrap_or(defaults.timeout),
            threshold: hc.failure_threshold.unwrap_or(1).clamp(1, 10) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(kind: HealthCheckType, path: Option<&str>) -> HealthCheckConfig {
        HealthCheckConfig {
            kind,
            resource_path: path.map(str::to_string),
            failure_threshold: None,
            interval_seconds: None,
            timeout_seconds: None,
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ipv4_wins_over_ipv6_and_port_is_required() {
        let both = attrs(&[
            (AWS_INSTANCE_IPV4, "10.0.0.1"),
            (AWS_INSTANCE_IPV6, "fd00::1"),
            (AWS_INSTANCE_PORT, "8080"),
        ]);
        let e = Endpoint::of(&hc(HealthCheckType::Http, Some("/health")), &both);
        assert_eq!(e.addr, Some("10.0.0.1:8080".parse().unwrap()));
        assert_eq!(e.path, "/health");

        let v6 = attrs(&[(AWS_INSTANCE_IPV6, "::1"), (AWS_INSTANCE_PORT, "443")]);
        let e = Endpoint::of(&hc(HealthCheckType::Https, None), &v6);
        assert_eq!(e.addr, Some("[::1]:443".parse().unwrap()));
        assert_eq!(e.path, "/");

        for bad in [
            attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1")]),
            attrs(&[(AWS_INSTANCE_PORT, "80")]),
            attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1"), (AWS_INSTANCE_PORT, "0")]),
            attrs(&[(AWS_INSTANCE_IPV4, "nope"), (AWS_INSTANCE_PORT, "80")]),
        ] {
            assert_eq!(
                Endpoint::of(&hc(HealthCheckType::Tcp, None), &bad).addr,
                None
            );
        }
    }

    #[test]
    fn tcp_checks_have_no_path_and_no_host_header() {
        let a = attrs(&[(AWS_INSTANCE_IPV4, "10.0.0.1"), (AWS_INSTANCE_PORT, "80")]);
        let e = Endpoint::of(&hc(HealthCheckType::Tcp, None), &a);
        assert_eq!(e.path, "");
        assert_eq!(e.host_header(), None);
    }

    #[test]
    fn host_header_omits_the_default_port_and_brackets_ipv6() {
        let e = |kind, ip: &str, port: &str| {
            Endpoint::of(
                &hc(kind, None),
                &attrs(&[(AWS_INSTANCE_IPV4, ip), (AWS_INSTANCE_PORT, port)]),
            )
            .host_header()
            .unwrap()
        };
        assert_eq!(e(HealthCheckType::Http, "10.0.0.1", "80"), "10.0.0.1");
        assert_eq!(e(HealthCheckType::Http, "10.0.0.1", "443"), "10.0.0.1:443");
        assert_eq!(e(HealthCheckType::Https, "10.0.0.1", "443"), "10.0.0.1");
        assert_eq!(
            e(HealthCheckType::Https, "10.0.0.1", "8443"),
            "10.0.0.1:8443"
        );
        let v6 = Endpoint::of(
            &hc(HealthCheckType::Http, None),
            &attrs(&[(AWS_INSTANCE_IPV6, "fd00::1"), (AWS_INSTANCE_PORT, "8080")]),
        );
        assert_eq!(v6.host_header().unwrap(), "[fd00::1]:8080");
    }

    #[test]
    fn timing_uses_the_config_then_the_defaults() {
        let d = Defaults {
            interval: Duration::from_millis(1500),
            timeout: Duration::from_millis(700),
        };
        let mut c = hc(HealthCheckType::Http, None);
        assert_eq!(
            Timing::of(&c, &d),
            Timing {
                interval: d.interval,
                timeout: d.timeout,
                threshold: 1
            }
        );
        c.interval_seconds = Some(30);
        c.timeout_seconds = Some(5);
        c.failure_threshold = Some(3);
        assert_eq!(
            Timing::of(&c, &d),
            Timing {
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(5),
                threshold: 3
            }
        );
        c.failure_threshold = Some(40);
        assert_eq!(Timing::of(&c, &d).threshold, 10);
    }
}
