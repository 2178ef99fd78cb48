//! Per-client limits of the public listener: requests in progress and request rate per client
//! address, refused with 429 and `Retry-After`, so that no client crowds out the others.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::PublicConfig;

/// How often (in admissions) the rate limiter forgets clients that have been quiet.
const FORGET_EVERY: u64 = 4096;

/// Why a request was refused, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub retry_after_secs: u64,
    pub reason: &'static str,
}

pub struct ClientLimits {
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    max_in_progress: usize,
    in_progress: Mutex<HashMap<IpAddr, usize>>,
    admissions: AtomicU64,
}

/// One admitted request; the client's count of requests in progress drops when it ends.
pub struct InProgress {
    limits: Arc<ClientLimits>,
    client: IpAddr,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// The unit one client is limited as: its address, or for IPv6 its /64 (which one host
/// usually holds whole).
pub fn client_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl ClientLimits {
    pub fn new(config: &PublicConfig) -> Self {
        let rate = NonZeroU32::new(config.rate_per_client).map(|rate| {
            let burst = NonZeroU32::new(config.rate_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            rate,
            clock: DefaultClock::default(),
            max_in_progress: config.max_concurrent_per_client,
            in_progress: Mutex::new(HashMap::new()),
            admissions: AtomicU64::new(0),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.in_progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one request of `peer`, or says why not and when to come back.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<InProgress, Refusal> {
        let client = client_of(peer);
        if let Some(rate) = &self.rate {
            if self
                .admissions
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(FORGET_EVERY)
            {
                rate.retain_recent();
                rate.shrink_to_fit();
            }
            if let Err(not_until) = rate.check_key(&client) {
                let wait = not_until.wait_time_from(self.clock.now());
                return Err(Refusal {
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                    reason: "too many requests from this client; slow down",
                });
            }
        }
        let mut counts = self.counts();
        let count = counts.entry(client).or_insert(0);
        if *count >= self.max_in_progress {
            return Err(Refusal {
                retry_after_secs: 1,
                reason: "too many requests in progress from this client",
            });
        }
        *count += 1;
        Ok(InProgress {
            limits: self.clone(),
            client,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrent: usize, rate: u32, burst: u32) -> Arc<ClientLimits> {
        Arc::new(ClientLimits::new(&PublicConfig {
            max_concurrent_per_client: concurrent,
            rate_per_client: rate,
            rate_burst: burst,
            jobs_api: true,
        }))
    }

    #[test]
    fn requests_in_progress_are_counted_per_client_and_released() {
        let limits = limits(2, 0, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        let refused = limits.admit(a).err().expect("a third at once is refused");
        assert_eq!(refused.retry_after_secs, 1);
        assert!(limits.admit(b).is_ok(), "another client is not affected");
        drop(first);
        assert!(
            limits.admit(a).is_ok(),
            "a finished request frees its place"
        );
    }

    #[test]
    fn the_rate_is_limited_per_client_with_a_retry_after() {
        let limits = limits(100, 1, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            drop(limits.admit(a).unwrap());
        }
        let refused = limits.admit(a).err().expect("past the burst");
        assert!((1..=2).contains(&refused.retry_after_secs), "{refused:?}");
        assert!(limits.admit("10.0.0.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(client_of(one), client_of(other));
        assert_ne!(
            client_of(one),
            client_of("2001:db8:1:3::1".parse().unwrap())
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_of(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
