//! Request rate limits per principal: a burst above a caller's rate gets
//! Cloud Map's `ThrottlingException` (HTTP 400, as AWS returns it), which
//! every AWS SDK retries with backoff. One caller flooding the API cannot
//! starve the others, and the registry's writers are not overrun.
//!
//! Authenticated calls are limited per principal; with open access (no
//! authentication) there is no principal, so calls are limited per client
//! address.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::{IntCounter, IntGauge};

use super::{ApiError, Identity};

/// How often idle callers' buckets are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// A rate as the command line gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second of one caller (> 0).
    pub per_second: f64,
    /// Requests one caller may make at once above the rate.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// The GCRA quota of this rate: one request per `1 / per_second`, with
    /// `burst` of them at once.
    fn quota(&self) -> Option<Quota> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return None;
        }
        Quota::with_period(Duration::from_secs_f64(1.0 / self.per_second))
            .map(|q| q.allow_burst(self.burst))
    }
}

/// Whom a request is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Principal(Arc<str>),
    Address(IpAddr),
}

/// The API's rate limiter (cheap to clone).
#[derive(Debug, Clone)]
pub struct Throttle {
    limiter: Arc<DefaultKeyedRateLimiter<Key>>,
    throttled: IntCounter,
    callers: IntGauge,
}

/// Why a limit cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The rate is zero, negative or too small to represent.
    #[error("the rate limit must be a positive number of requests per second")]
    Rate,
    /// The metrics could not be registered.
    #[error("rate-limit metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl Throttle {
    /// A limiter of `limit` per caller, counting in `prom`; forgets idle
    /// callers in the background.
    pub fn new(limit: RateLimit, prom: &prometheus::Registry) -> Result<Self, LimitError> {
        let quota = limit.quota().ok_or(LimitError::Rate)?;
        let throttled = IntCounter::new(
            "waymark_api_throttled_total",
            "API requests refused with ThrottlingException (a caller above its rate limit).",
        )?;
        let callers = IntGauge::new(
            "waymark_api_rate_limited_callers",
            "Callers (principals, or addresses with open access) with a rate-limit bucket.",
        )?;
        prom.register(Box::new(throttled.clone()))?;
        prom.register(Box::new(callers.clone()))?;
        let me = Self {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            throttled,
            callers,
        };
        let weak = Arc::downgrade(&me.limiter);
        let gauge = me.callers.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FORGET_EVERY);
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.retain_recent();
                limiter.shrink_to_fit();
                gauge.set(limiter.len() as i64);
            }
        });
        Ok(me)
    }

    /// Charges one request of `caller` (or, unauthenticated, of `source`);
    /// `ThrottlingException` when it is over its rate.
    pub fn check(
        &self,
        caller: Option<&Identity>,
        source: Option<SocketAddr>,
    ) -> Result<(), ApiError> {
        let key = match (caller, source) {
            (Some(c), _) => Key::Principal(c.name.as_str().into()),
            (None, Some(addr)) => Key::Address(addr.ip()),
            // No way to tell callers apart (an embedded router): one bucket.
            (None, None) => Key::Address(IpAddr::from([0, 0, 0, 0])),
        };
        match self.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.throttled.inc();
                Err(ApiError::new("ThrottlingException", "Rate exceeded"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str) -> Identity {
        Identity {
            name: name.into(),
            access_key_id: format!("AKIA{name}"),
            arn: format!("arn:aws:iam::000000000000:user/{name}"),
        }
    }

    #[tokio::test]
    async fn each_caller_has_its_own_burst() {
        let prom = prometheus::Registry::new();
        let limit = RateLimit {
            per_second: 0.5,
            burst: NonZeroU32::new(3).unwrap(),
        };
        let t = Throttle::new(limit, &prom).unwrap();
        let (a, b) = (who("a"), who("b"));
        for _ in 0..3 {
            t.check(Some(&a), None).unwrap();
        }
        let e = t.check(Some(&a), None).unwrap_err();
        assert_eq!(e.kind, "ThrottlingException");
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        // Another principal is not affected; unauthenticated callers are
        // told apart by address.
        t.check(Some(&b), None).unwrap();
        let x: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let y: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        for _ in 0..3 {
            t.check(None, Some(x)).unwrap();
        }
        assert!(t.check(None, Some(x)).is_err());
        // Same address, another port: the same caller.
        assert!(
            t.check(None, Some("10.0.0.1:2000".parse().unwrap()))
                .is_err()
        );
        t.check(None, Some(y)).unwrap();
        assert_eq!(t.throttled.get(), 3);
    }

    #[test]
    fn a_rate_must_be_positive() {
        let burst = NonZeroU32::new(1).unwrap();
        for per_second in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                RateLimit { per_second, burst }.quota().is_none(),
                "{per_second}"
            );
        }
        assert!(
            RateLimit {
                per_second: 0.01,
                burst
            }
            .quota()
            .is_some()
        );
    }
}
