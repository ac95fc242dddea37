//! Staying inside a remote provider's quota: rate budgets, a concurrency cap, and retries.
//!
//! Every remote call goes through [`Limiter::run`]: it waits for a concurrency permit, for one
//! request of the requests/s budget and for the call's tokens of the tokens/min budget, then
//! calls. The provider turns a failure into a [`Verdict`] — its `classify` step — so this module
//! never needs to know what a Bedrock or Ollama error looks like. A `Retry` (throttling, a model
//! still loading, 5xx) sleeps an exponential backoff with full jitter and tries again; after
//! `max_retries` retries the call fails with [`EmbedError::Throttled`], so the caller's message
//! is retried later or dead-lettered, never dropped. A `Fail` (validation, access) returns at
//! once: retrying a request the service has rejected only burns quota.
//!
//! Two decisions a reader may question. The budgets are client-side token buckets (`governor`)
//! rather than a reaction to 429s: a client that waits for its budget is throttled rarely,
//! and a service that throttles costs a round trip plus a backoff each time. And a call that
//! needs more tokens than the bucket holds (a Cohere batch of 96 long texts) is admitted by
//! draining the bucket several times over instead of being refused — the long-run rate stays
//! the quota's, which is all a per-minute quota asks.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::EmbedError;
use crate::config::EmbedConfig;

/// The budgets one provider must stay within. Zero means "no limit" for the two rates.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub requests_per_sec: u32,
    /// Requests that may go out at once after a quiet spell.
    pub request_burst: u32,
    pub tokens_per_min: u32,
    /// Tokens that may go out at once after a quiet spell.
    pub token_burst: u32,
    /// The share of each rate the limiter aims for. A client that spends its budget at the
    /// very instant it refills meets the service's own bucket at the same instant, and loses
    /// the tie about half the time; a little headroom keeps it clear of that boundary.
    pub headroom: f64,
    /// Calls in flight at once (at least one).
    pub max_concurrency: usize,
    /// Retries after the first attempt; `max_retries + 1` attempts in all.
    pub max_retries: u32,
    /// First backoff ceiling; doubled on each retry up to `backoff_cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Limits {
    /// The limits `config` asks for, aiming at 98% of each rate. Bursts are one second's worth
    /// of requests and ten seconds' worth of tokens: a per-minute quota is enforced over a
    /// window the service does not publish, and spending a whole minute's tokens in one instant
    /// invites throttling.
    pub fn from_config(config: &EmbedConfig) -> Limits {
        Limits {
            requests_per_sec: config.requests_per_sec,
            request_burst: config.requests_per_sec,
            tokens_per_min: config.tokens_per_min,
            token_burst: config.tokens_per_min.div_ceil(6),
            headroom: 0.98,
            max_concurrency: config.max_concurrency.max(1),
            max_retries: config.max_retries,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(20),
        }
    }

    /// No rate budgets, `max_concurrency` calls at once, and `max_retries` quick retries.
    pub fn unlimited(max_concurrency: usize, max_retries: u32) -> Limits {
        Limits {
            requests_per_sec: 0,
            request_burst: 0,
            tokens_per_min: 0,
            token_burst: 0,
            headroom: 1.0,
            max_concurrency: max_concurrency.max(1),
            max_retries,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(20),
        }
    }
}

/// What a failed attempt means, as the provider's `classify` step decides it.
#[derive(Debug)]
pub enum Verdict {
    /// Transient: throttled, the model still loading, a 5xx. Worth another attempt later.
    Retry(String),
    /// The service rejected the request itself; another attempt would fail the same way.
    Fail(EmbedError),
}

/// Counters an operator asks about a provider: calls made, how many were refused as transient,
/// and how many calls gave up.
#[derive(Debug, Default)]
pub struct LimiterStats {
    pub attempts: AtomicU64,
    pub throttled: AtomicU64,
    pub exhausted: AtomicU64,
}

impl LimiterStats {
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
    /// Attempts that were retries: every throttled attempt but the ones given up on.
    pub fn retries(&self) -> u64 {
        self.throttled().saturating_sub(self.exhausted())
    }
}

/// The shared gate in front of one provider; every call of every batch passes through it.
pub struct Limiter {
    limits: Limits,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    permits: Semaphore,
    stats: LimiterStats,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("limits", &self.limits).field("stats", &self.stats).finish()
    }
}

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        let headroom = if limits.headroom > 0.0 { limits.headroom.min(1.0) } else { 1.0 };
        // One cell per `period`, where the period is stretched by the headroom.
        let quota = |per: Duration, rate: NonZeroU32, burst: NonZeroU32| {
            let period = per.div_f64(rate.get() as f64 * headroom).max(Duration::from_nanos(1));
            Quota::with_period(period).expect("a non-zero period").allow_burst(burst)
        };
        let requests = NonZeroU32::new(limits.requests_per_sec).map(|rate| {
            let burst = NonZeroU32::new(limits.request_burst).unwrap_or(rate);
            RateLimiter::direct(quota(Duration::from_secs(1), rate, burst))
        });
        let tokens = NonZeroU32::new(limits.tokens_per_min).map(|rate| {
            let burst = NonZeroU32::new(limits.token_burst).unwrap_or(rate);
            (RateLimiter::direct(quota(Duration::from_secs(60), rate, burst)), burst)
        });
        let permits = Semaphore::new(limits.max_concurrency.max(1));
        Limiter { limits, requests, tokens, permits, stats: LimiterStats::default() }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn stats(&self) -> &LimiterStats {
        &self.stats
    }

    /// Runs `call` within the budgets, retrying what it classifies as `Retry`.
    ///
    /// `tokens` is what the call costs against the tokens/min budget, charged before the first
    /// attempt (an estimate is fine; it should not be lower than the service's own count).
    pub async fn run<T, F, Fut>(&self, tokens: usize, mut call: F) -> Result<T, EmbedError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Verdict>>,
    {
        let attempts_allowed = self.limits.max_retries.saturating_add(1);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = {
                // Hold the permit for the call only, not for the backoff: a sleeping retry
                // should not keep other batches from the budget.
                let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
                // Tokens are charged once per call: a throttled attempt did not spend the
                // service's token quota, and charging the retry again would leave that much
                // quota unused.
                self.admit(if attempt == 1 { tokens } else { 0 }).await;
                self.stats.attempts.fetch_add(1, Ordering::Relaxed);
                call().await
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(Verdict::Fail(error)) => return Err(error),
                Err(Verdict::Retry(reason)) => {
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    if attempt >= attempts_allowed {
                        self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(attempts = attempt, %reason, "embedding call still throttled; giving up");
                        return Err(EmbedError::Throttled { attempts: attempt });
                    }
                    let delay = backoff_delay(&self.limits, attempt - 1, fastrand::f64());
                    tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, %reason, "retrying embedding call");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Splits `texts` into batches of at most `batch_size`, embeds them with `embed_batch`
    /// (which should call [`Limiter::run`]), up to `max_concurrency` batches at once, and
    /// returns the vectors in the order of `texts`. The first failed batch fails the whole call.
    pub async fn in_batches<'a, F, Fut>(
        &self,
        texts: &'a [String],
        batch_size: usize,
        embed_batch: F,
    ) -> Result<Vec<Vec<f32>>, EmbedError>
    where
        F: Fn(&'a [String]) -> Fut,
        Fut: Future<Output = Result<Vec<Vec<f32>>, EmbedError>>,
    {
        // The futures are made up front (they do nothing until polled) so that the stream's
        // type names no closure over a borrowed batch, which `Send` futures cannot carry.
        let pending: Vec<_> =
            texts.chunks(batch_size.max(1)).map(|batch| expect_len(batch.len(), embed_batch(batch))).collect();
        let batches: Vec<Vec<Vec<f32>>> =
            futures::stream::iter(pending).buffered(self.limits.max_concurrency.max(1)).try_collect().await?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// Waits until one more request and `tokens` more tokens fit the budgets.
    async fn admit(&self, tokens: usize) {
        if let Some(requests) = &self.requests {
            requests.until_ready().await;
        }
        if let Some((bucket, burst)) = &self.tokens {
            let mut remaining = u32::try_from(tokens).unwrap_or(u32::MAX);
            // `until_n_ready` refuses more than the burst outright; take it a burst at a time.
            while let Some(n) = NonZeroU32::new(remaining) {
                let take = n.min(*burst);
                bucket.until_n_ready(take).await.expect("never more than the burst");
                remaining -= take.get();
            }
        }
    }
}

/// `vectors`, checked to hold one vector per text of the batch.
async fn expect_len(
    expected: usize,
    vectors: impl Future<Output = Result<Vec<Vec<f32>>, EmbedError>>,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let vectors = vectors.await?;
    if vectors.len() != expected {
        return Err(EmbedError::Provider(format!("asked for {expected} vectors, got {}", vectors.len())));
    }
    Ok(vectors)
}

/// The sleep before retry number `retry + 1`: uniform in `[0, min(cap, base · 2^retry)]`
/// ("full jitter"), `unit` being a uniform draw from `[0, 1)`. Full jitter spreads the retries
/// of many throttled callers so they do not come back in step.
pub fn backoff_delay(limits: &Limits, retry: u32, unit: f64) -> Duration {
    let ceiling = limits.backoff_base.saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX));
    ceiling.min(limits.backoff_cap).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    use super::*;

    fn quick(max_retries: u32) -> Limits {
        Limits {
            backoff_base: Duration::from_millis(1),
            backoff_cap: Duration::from_millis(4),
            ..Limits::unlimited(4, max_retries)
        }
    }

    #[test]
    fn backoff_grows_to_the_cap_and_jitters_below_it() {
        let limits =
            Limits { backoff_base: Duration::from_millis(100), backoff_cap: Duration::from_secs(2), ..quick(5) };
        assert_eq!(backoff_delay(&limits, 0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&limits, 3, 1.0), Duration::from_millis(800));
        assert_eq!(backoff_delay(&limits, 10, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(&limits, 40, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(&limits, 3, 0.5), Duration::from_millis(400));
        assert_eq!(backoff_delay(&limits, 3, 0.0), Duration::ZERO);
    }

    #[tokio::test]
    async fn retries_run_out_after_max_retries_and_report_the_attempts() {
        let limiter = Limiter::new(quick(3));
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = limiter
            .run(10, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Verdict::Retry("429".into()))
            })
            .await;
        assert!(matches!(r, Err(EmbedError::Throttled { attempts: 4 })), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(limiter.stats().throttled(), 4);
        assert_eq!(limiter.stats().exhausted(), 1);
        assert_eq!(limiter.stats().retries(), 3, "the three attempts after the first");
    }

    #[tokio::test]
    async fn a_failure_is_not_retried() {
        let limiter = Limiter::new(quick(3));
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = limiter
            .run(10, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Verdict::Fail(EmbedError::Provider("ValidationException".into())))
            })
            .await;
        assert!(matches!(r, Err(EmbedError::Provider(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_transient_failure_then_success_returns_the_value() {
        let limiter = Limiter::new(quick(3));
        let calls = AtomicU32::new(0);
        let r = limiter
            .run(10, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Verdict::Retry("503".into()))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(limiter.stats().attempts(), 3);
    }

    #[tokio::test]
    async fn a_call_larger_than_the_token_burst_waits_for_its_tokens() {
        // 6000 tokens/min = 100/s with a burst of 100: 250 tokens need the burst plus 1.5 s.
        let limits = Limits { tokens_per_min: 6000, token_burst: 100, ..quick(0) };
        let limiter = Limiter::new(limits);
        let start = Instant::now();
        limiter.run(250, || async { Ok::<_, Verdict>(()) }).await.unwrap();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(1400), "waited only {waited:?}");
        assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    }

    #[tokio::test]
    async fn requests_per_second_spaces_calls_out() {
        let limits = Limits { requests_per_sec: 20, request_burst: 1, ..quick(0) };
        let limiter = Limiter::new(limits);
        let start = Instant::now();
        for _ in 0..11 {
            limiter.run(0, || async { Ok::<_, Verdict>(()) }).await.unwrap();
        }
        // The first call is free; ten more at 20/s take half a second.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(450), "waited only {waited:?}");
    }

    #[tokio::test]
    async fn batches_keep_their_order_and_respect_the_concurrency_cap() {
        let limiter = Limiter::new(Limits { max_concurrency: 3, ..quick(0) });
        let texts: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        let in_flight = AtomicU32::new(0);
        let peak = AtomicU32::new(0);
        let vectors = limiter
            .in_batches(&texts, 4, |batch| {
                let (in_flight, peak, limiter) = (&in_flight, &peak, &limiter);
                async move {
                    limiter
                        .run(0, || async {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            // Later batches finish first, so order comes from the limiter.
                            let wait = 20 - batch[0].parse::<u64>().unwrap_or(0) / 4;
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            Ok(batch.iter().map(|t| vec![t.parse::<f32>().unwrap_or(-1.0)]).collect::<Vec<_>>())
                        })
                        .await
                }
            })
            .await
            .unwrap();
        let got: Vec<f32> = vectors.into_iter().map(|v| v[0]).collect();
        let want: Vec<f32> = (0..50).map(|i| i as f32).collect();
        assert_eq!(got, want);
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert!(peak.load(Ordering::SeqCst) >= 2, "batches did not overlap");
    }
}
