//! The Standard Webhooks signature scheme (Replicate signs its webhooks so): headers
//! `webhook-id`, `webhook-timestamp` and `webhook-signature` (space-separated `v1,<base64>`
//! entries), each the HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the base64 part of a
//! `whsec_…` secret.

use base64::Engine as _;
use hmac::Mac as _;

/// How far a delivery's timestamp may be from now (a replay of an old one is refused).
const TOLERANCE_S: i64 = 300;

/// Why a webhook delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook: {0}")]
    Unsigned(&'static str),
    #[error("webhook: the timestamp is more than 5 minutes from now")]
    Stale,
    #[error("webhook: the body is not a prediction: {0}")]
    NotAPrediction(String),
    #[error("webhook: the secret is not a `whsec_` key")]
    BadSecret,
}

/// The signing key a `whsec_…` secret holds (its base64 part, decoded).
pub fn secret_key(secret: &str) -> Result<Vec<u8>, WebhookError> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or(WebhookError::BadSecret)?)
        .map_err(|_| WebhookError::BadSecret)
}

fn mac(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> Result<hmac::Hmac<sha2::Sha256>, WebhookError> {
    let key = secret_key(secret.trim())?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|_| WebhookError::BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The `webhook-signature` entry for a delivery.
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> Result<String, WebhookError> {
    let tag = mac(secret, id, timestamp, body)?.finalize().into_bytes();
    Ok(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag)))
}

/// Checks a delivery: one `v1` signature matches (compared in full, in constant time) and the
/// timestamp is within 5 minutes of now.
pub fn verify(secret: &str, id: &str, timestamp: &str, signature: &str, body: &[u8]) -> Result<(), WebhookError> {
    let mac = mac(secret, id, timestamp, body)?;
    let good = signature.split_whitespace().filter_map(|s| s.strip_prefix("v1,")).any(|sig| {
        base64::engine::general_purpose::STANDARD.decode(sig).is_ok_and(|sig| mac.clone().verify_slice(&sig).is_ok())
    });
    if !good {
        return Err(WebhookError::Unsigned("no valid v1 signature"));
    }
    let sent: i64 = timestamp.trim().parse().map_err(|_| WebhookError::Unsigned("the timestamp is not a number"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if (now - sent).abs() > TOLERANCE_S {
        return Err(WebhookError::Stale);
    }
    Ok(())
}
