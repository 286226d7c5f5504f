//! Webhook delivery jobs: POST the signed event, classify the answer.

use std::time::Duration;

use reelsmith_store::{ClaimedJob, FailOutcome};

use crate::jobs::outcome::Outcome;
use crate::net::outbound_client;
use crate::queues::Delivery;
use crate::state::AppState;
use crate::webhooks;

pub(crate) async fn deliver(state: &AppState, job: ClaimedJob, d: Delivery) -> Outcome {
    let timeout = Duration::from_secs_f64(state.config.webhook_timeout_secs);
    let allow_private = state.config.webhook_allow_private;
    // Each key's webhooks are signed with its own secret: one tenant cannot forge another's.
    let secret = match &d.key_id {
        Some(id) => match state.meta.api_key(id).await {
            Ok(k) => k.and_then(|k| k.webhook_secret).unwrap_or_else(|| state.webhook_secret.to_string()),
            Err(e) => {
                let _ = state.queue.fail(&job.lease, &format!("reading the key: {e}"), true, vec![]).await;
                return Outcome::Failed;
            }
        },
        None => state.webhook_secret.to_string(),
    };
    let outcome = match crate::jobs::deliver::send(&state.http, secret.as_bytes(), &d, timeout, allow_private).await {
        Ok(_) => match state.queue.complete(&job.lease, vec![]).await {
            Ok(true) => Outcome::Succeeded,
            _ => Outcome::Lost,
        },
        Err(reason) => match state.queue.fail(&job.lease, &reason, true, vec![]).await {
            Ok(FailOutcome::Retrying { .. }) => Outcome::Retrying,
            Ok(FailOutcome::Failed) => Outcome::Failed,
            _ => Outcome::Lost,
        },
    };
    metrics::counter!("reelsmith_webhook_deliveries_total", "outcome" => outcome.as_str()).increment(1);
    outcome
}

/// One delivery attempt: Ok on 2xx, Err(reason) otherwise (see [`crate::net::outbound_client`]).
pub async fn send(
    client: &reqwest::Client,
    secret: &[u8],
    d: &Delivery,
    timeout: Duration,
    allow_private: bool,
) -> Result<u16, String> {
    let url = reqwest::Url::parse(&d.url).map_err(|e| format!("bad webhook URL: {e}"))?;
    let client = outbound_client(client, &url, allow_private).await?;
    let ts = reelsmith_store::now_ms() / 1000;
    let sig = webhooks::sign(secret, ts, &d.body);
    let resp = client
        .post(&d.url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("user-agent", concat!("reelsmith-webhooks/", env!("CARGO_PKG_VERSION")))
        .header("reelsmith-event-id", &d.event_id)
        .header("reelsmith-event-type", &d.event_type)
        .header("reelsmith-timestamp", ts.to_string())
        .header("reelsmith-signature", format!("t={ts},v1={sig}"))
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            format!("delivery to {} {kind}", url.host_str().unwrap_or_default())
        })?;
    let status = resp.status();
    // Only the status is kept: echoing a receiver's body would let callers read internal services.
    if status.is_success() { Ok(status.as_u16()) } else { Err(format!("receiver answered HTTP {}", status.as_u16())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivery_refuses_names_that_resolve_to_private_addresses() {
        let d = Delivery {
            url: "http://localhost:9/hook".into(),
            event_id: "e".into(),
            event_type: "t".into(),
            body: "{}".into(),
            key_id: None,
        };
        let client = reqwest::Client::new();
        let e = send(&client, b"k", &d, Duration::from_secs(1), false).await.unwrap_err();
        assert!(e.contains("private address"), "{e}");
        // Allowed: it really tries (and nothing listens on port 9).
        let e = send(&client, b"k", &d, Duration::from_secs(1), true).await.unwrap_err();
        assert!(e.contains("could not connect") || e.contains("failed"), "{e}");
    }
}
