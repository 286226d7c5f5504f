//! Remote services Reelsmith calls: each client speaks its provider's documented wire format,
//! bounds its calls (timeouts, response sizes) and classifies every failure as worth another
//! attempt or final, naming the provider. With the `fake` feature each provider also has a
//! local server speaking the same wire format, for tests.
//!
//! Today: D-ID (talking heads). The prompt-to-video work adds LLM, image, stock-media and voice
//! providers beside it, behind the same error classes.

pub mod did;

/// Why a call to a provider failed, and whether another attempt can help. The message names
/// the provider and the call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The network, a timeout, a 5xx or a 429: try again later.
    #[error("{0}")]
    Retryable(String),
    /// The request itself was refused (4xx), or the answer is unusable: another attempt would
    /// fail the same way.
    #[error("{0}")]
    Final(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Retryable(m) | Failure::Final(m) => m,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Failure::Retryable(_))
    }
}
