//! Remote services Reelsmith calls: each client speaks its provider's documented wire format,
//! bounds its calls (timeouts, response sizes) and classifies every failure as worth another
//! attempt or final, naming the provider. With the `fake` feature each provider also has a
//! local server speaking the same wire format, for tests.
//!
//! Providers: D-ID (talking heads), LLMs over the OpenAI-compatible Chat Completions protocol,
//! stock footage (Pexels, Pixabay), generated pictures (OpenAI Images, Stable Diffusion WebUI,
//! Replicate) and voices (ElevenLabs, OpenAI speech). Every call goes through a [`Gate`]: breaker, concurrency, rate limit, deadline and
//! retries by failure class.

pub mod cache;
pub mod did;
pub mod gate;
pub mod http;
pub mod images;
pub mod llm;
pub mod shared_limit;
pub mod speech;
pub mod standard_webhooks;
pub mod stock;

pub use gate::{Attempts, BreakerState, Gate, Limits};

/// Why a call to a provider failed, and what another attempt can do. The message names the
/// provider and the call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The network, a timeout or a 5xx: try again later.
    #[error("{0}")]
    Retryable(String),
    /// The provider asked us to slow down (a rate or concurrency limit): wait, at least
    /// `retry_after` when it said, and try again.
    #[error("{message}")]
    RateLimited { message: String, retry_after: Option<std::time::Duration> },
    /// Billing or quota is exhausted (OpenAI `insufficient_quota`, HTTP 402): no retry helps
    /// until someone pays; the provider's breaker opens.
    #[error("{0}")]
    Quota(String),
    /// The provider's breaker is open after failures: the call was not made.
    #[error("{0}")]
    Unavailable(String),
    /// The request itself was refused (4xx), or the answer is unusable: another attempt would
    /// fail the same way.
    #[error("{0}")]
    Final(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Retryable(m)
            | Failure::Quota(m)
            | Failure::Unavailable(m)
            | Failure::Final(m)
            | Failure::RateLimited { message: m, .. } => m,
        }
    }

    /// Worth another attempt later (the job may be retried).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Failure::Retryable(_) | Failure::RateLimited { .. } | Failure::Unavailable(_))
    }

    /// The class, as metrics and ledgers name it.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Retryable(_) => "transient",
            Failure::RateLimited { .. } => "rate_limited",
            Failure::Quota(_) => "quota",
            Failure::Unavailable(_) => "breaker_open",
            Failure::Final(_) => "invalid",
        }
    }

    /// The last failure of a call that ran out of attempts, saying so.
    pub(crate) fn exhausted(self, attempts: u32) -> Failure {
        let note = |m: &str| format!("{m} (after {attempts} attempts)");
        match self {
            Failure::Retryable(m) => Failure::Retryable(note(&m)),
            Failure::RateLimited { message, retry_after } => {
                Failure::RateLimited { message: note(&message), retry_after }
            }
            other => other,
        }
    }
}
