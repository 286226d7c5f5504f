//! A local D-ID for tests, speaking the documented wire format: Basic auth with [`FAKE_KEY`],
//! multipart uploads, talks that go `created` → `started` → `done` (or `error`) over three
//! polls or as soon as their webhook goes out, `{kind, description}` errors and pre-signed
//! result links.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// What the fake D-ID saw and how it behaves.
#[derive(Default)]
pub struct Fake {
    pub base: String,
    /// Call the talk's webhook when it is done.
    pub webhooks: bool,
    /// Fail every talk as D-ID does when it finds no face.
    pub fail: bool,
    /// The Authorization header of every call.
    pub auth: Vec<String>,
    /// Every uploaded image and recording.
    pub images: Vec<Vec<u8>>,
    /// Each talk's request, how often it was polled, whether it is finished.
    pub talks: HashMap<String, (Value, u32, bool)>,
    /// The bytes every talk's `result_url` serves.
    pub result: Vec<u8>,
    /// Statuses the next API calls answer with instead (503 outage, 429 rate limit…), in order.
    pub refuse_next: Vec<u16>,
}

pub type FakeState = Arc<Mutex<Fake>>;

pub const FAKE_KEY: &str = "YWJjQGV4YW1wbGUuY29t:fake-secret";

fn did_error(status: StatusCode, kind: &str, description: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({"kind": kind, "description": description})))
}

/// What D-ID answers before looking at a call: a queued refusal, or 401 for a wrong key.
fn gate(f: &FakeState, h: &HeaderMap) -> Option<(StatusCode, Json<Value>)> {
    let got = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut f = f.lock().unwrap();
    f.auth.push(got.clone());
    if !f.refuse_next.is_empty() {
        let status = StatusCode::from_u16(f.refuse_next.remove(0)).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let (kind, why) = match status {
            StatusCode::TOO_MANY_REQUESTS => ("TooManyRequestsError", "try again later"),
            StatusCode::PAYMENT_REQUIRED => ("InsufficientCreditsError", "not enough credits"),
            _ => ("InternalServerError", "try again later"),
        };
        return Some(did_error(status, kind, why));
    }
    (got != format!("Basic {FAKE_KEY}"))
        .then(|| did_error(StatusCode::UNAUTHORIZED, "AuthorizationError", "bad credentials"))
}

/// The talk as D-ID's GET returns it: `created` at the first look, `started` at the second,
/// finished at the third (or as soon as its webhook went out).
fn fake_talk(f: &mut Fake, id: &str, poll: bool) -> Value {
    let fail = f.fail;
    let base = f.base.clone();
    let (body, polls, done) = f.talks.get_mut(id).expect("known talk");
    if poll {
        *polls += 1;
        *done |= *polls >= 3;
    }
    let mut t = json!({"id": id, "object": "talk", "source_url": body["source_url"], "created_at": "2026-11-29T00:00:00.000Z",
        "created_by": "fake", "config": body["config"], "user_id": "fake"});
    if !*done {
        t["status"] = json!(if *polls <= 1 { "created" } else { "started" });
    } else if fail {
        t["status"] = json!("error");
        t["error"] = json!({"kind": "FaceError", "description": "Failed to detect a face in the source image"});
    } else {
        t["status"] = json!("done");
        t["duration"] = json!(2.0);
        t["result_url"] = json!(format!("{base}/results/{id}.mp4?X-Amz-Signature=fake"));
    }
    t
}

/// Starts the fake on a free loopback port (its URL in `base`).
pub async fn fake_did(webhooks: bool, fail: bool, result: Vec<u8>) -> FakeState {
    let state: FakeState = Arc::new(Mutex::new(Fake { webhooks, fail, result, ..Default::default() }));
    let upload = |field: &'static str, prefix: &'static str| {
        move |State(f): State<FakeState>, h: HeaderMap, mut mp: Multipart| async move {
            if let Some(refused) = gate(&f, &h) {
                return refused;
            }
            let Ok(Some(part)) = mp.next_field().await else {
                return did_error(StatusCode::BAD_REQUEST, "BadRequestError", "no file");
            };
            if part.name() != Some(field) {
                return did_error(StatusCode::BAD_REQUEST, "BadRequestError", "wrong field name");
            }
            let bytes = part.bytes().await.unwrap().to_vec();
            let mut f = f.lock().unwrap();
            f.images.push(bytes);
            let n = f.images.len();
            (
                StatusCode::CREATED,
                Json(
                    json!({"id": format!("{prefix}_{n}"), "url": format!("s3://d-id-{field}s-prod/fake/{prefix}_{n}")}),
                ),
            )
        }
    };
    let app = Router::new()
        .route("/images", post(upload("image", "img")))
        .route("/audios", post(upload("audio", "aud")))
        .route(
            "/talks",
            post(|State(f): State<FakeState>, h: HeaderMap, Json(body): Json<Value>| async move {
                if let Some(refused) = gate(&f, &h) {
                    return refused;
                }
                let source = body["source_url"].as_str().unwrap_or_default();
                let script_ok = match body["script"]["type"].as_str() {
                    Some("text") => body["script"]["input"].as_str().is_some_and(|i| !i.trim().is_empty()),
                    Some("audio") => body["script"]["audio_url"].as_str().is_some_and(|u| u.starts_with("s3://")),
                    _ => false,
                };
                if !source.starts_with("s3://d-id-images-prod/") || !script_ok {
                    return did_error(StatusCode::BAD_REQUEST, "BadRequestError", "invalid source_url or script");
                }
                let (id, webhook, webhooks) = {
                    let mut f = f.lock().unwrap();
                    let id = format!("tlk_fake{}", f.talks.len() + 1);
                    f.talks.insert(id.clone(), (body.clone(), 0, false));
                    (id, body["webhook"].as_str().map(str::to_string), f.webhooks)
                };
                if let (Some(url), true) = (webhook, webhooks) {
                    let (f, id) = (f.clone(), id.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        let talk = {
                            let mut f = f.lock().unwrap();
                            f.talks.get_mut(&id).expect("known talk").2 = true;
                            fake_talk(&mut f, &id, false)
                        };
                        let _ = reqwest::Client::new().post(url).json(&talk).send().await;
                    });
                }
                (StatusCode::CREATED, Json(json!({"id": id, "object": "talk", "created_at": "2026-11-29T00:00:00.000Z", "status": "created"})))
            }),
        )
        .route(
            "/talks/{id}",
            get(|State(f): State<FakeState>, h: HeaderMap, UrlPath(id): UrlPath<String>| async move {
                if let Some(refused) = gate(&f, &h) {
                    return refused;
                }
                let mut f = f.lock().unwrap();
                if !f.talks.contains_key(&id) {
                    return did_error(StatusCode::NOT_FOUND, "NotFoundError", "talk not found");
                }
                (StatusCode::OK, Json(fake_talk(&mut f, &id, true)))
            }),
        )
        .route("/results/{file}", get(|State(f): State<FakeState>| async move { f.lock().unwrap().result.clone() }))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    state.lock().unwrap().base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Failure;
    use crate::did::Client;

    /// One attempt per call: each answer comes back as D-ID gave it.
    fn single() -> std::sync::Arc<crate::Gate> {
        std::sync::Arc::new(crate::Gate::new("d-id", crate::Limits { max_attempts: 1, ..crate::did::limits() }))
    }

    fn client(fake: &FakeState, key: &str) -> Client {
        Client::new(reqwest::Client::new(), &fake.lock().unwrap().base, key, single())
    }

    /// The whole talk against the fake: upload, create, three polls, download; every call
    /// carries the key as D-ID expects it.
    #[tokio::test]
    async fn a_talk_goes_through_upload_create_poll_and_download() {
        let fake = fake_did(false, false, b"not really an mp4".to_vec()).await;
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("face.png");
        std::fs::write(&photo, b"png bytes").unwrap();
        let did = client(&fake, FAKE_KEY);
        let url = did.upload("image", &photo, "image/png").await.unwrap();
        assert!(url.starts_with("s3://d-id-images-prod/"), "{url}");
        let body = json!({"source_url": url, "script": {"type": "text", "input": "Hello."}});
        let id = did.create_talk(&body).await.unwrap();
        let statuses: Vec<String> = {
            let mut v = vec![];
            for _ in 0..3 {
                v.push(did.talk(&id).await.unwrap()["status"].as_str().unwrap().to_string());
            }
            v
        };
        assert_eq!(statuses, ["created", "started", "done"]);
        let done = did.talk(&id).await.unwrap();
        let out = dir.path().join("result.mp4");
        let n = did.download(done["result_url"].as_str().unwrap(), &out, 1 << 20).await.unwrap();
        assert_eq!((n, std::fs::read(&out).unwrap()), (17, b"not really an mp4".to_vec()));
        let f = fake.lock().unwrap();
        assert_eq!(f.images, vec![b"png bytes".to_vec()]);
        assert!(f.auth.iter().all(|a| a == &format!("Basic {FAKE_KEY}")), "{:?}", f.auth);
    }

    /// Failures are classified: a refused request (4xx) is final, an outage (5xx) or a rate
    /// limit (429) is worth another attempt; each names D-ID, the call and D-ID's own reason.
    #[tokio::test]
    async fn errors_name_d_id_and_say_whether_to_retry() {
        let fake = fake_did(false, false, vec![]).await;
        let wrong = client(&fake, "wrong-key");
        let e = wrong.talk("tlk_x").await.unwrap_err();
        assert!(
            matches!(&e, Failure::Final(m) if m.contains("D-ID GET /talks answered 401") && m.contains("AuthorizationError")),
            "{e:?}"
        );
        let did = client(&fake, FAKE_KEY);
        let e = did.create_talk(&json!({"source_url": "http://elsewhere/x.jpg", "script": {}})).await.unwrap_err();
        assert!(matches!(&e, Failure::Final(m) if m.contains("400") && m.contains("BadRequestError")), "{e:?}");
        let e = did.talk("tlk_nosuch").await.unwrap_err();
        assert!(matches!(&e, Failure::Final(m) if m.contains("404")), "{e:?}");
        fake.lock().unwrap().refuse_next = vec![503, 429];
        let e = did.talk("tlk_x").await.unwrap_err();
        assert!(e.is_retryable() && e.message().contains("503"), "{e:?}");
        let e = did.talk("tlk_x").await.unwrap_err();
        assert!(e.is_retryable() && e.message().contains("429"), "{e:?}");
        // Nothing listens: the network failure is retryable too.
        let gone = Client::new(reqwest::Client::new(), "http://127.0.0.1:9", FAKE_KEY, single());
        assert!(gone.talk("tlk_x").await.unwrap_err().is_retryable());
    }

    /// Through a gate that retries: an outage and a rate limit are waited out; running out of
    /// credits (402) is final at once and opens D-ID's breaker, so the next call is not sent.
    #[tokio::test]
    async fn the_gate_retries_outages_and_stops_at_an_empty_account() {
        let fake = fake_did(false, false, vec![]).await;
        let quick = crate::Limits {
            base_backoff: std::time::Duration::from_millis(5),
            max_backoff: std::time::Duration::from_millis(20),
            ..crate::did::limits()
        };
        let gate = std::sync::Arc::new(crate::Gate::new("d-id", quick));
        let did = Client::new(reqwest::Client::new(), &fake.lock().unwrap().base.clone(), FAKE_KEY, gate);
        let body = json!({"source_url": "s3://d-id-images-prod/x.png", "script": {"type": "text", "input": "Hi."}});
        fake.lock().unwrap().refuse_next = vec![503, 429];
        let id = did.create_talk(&body).await.unwrap();
        assert!(id.starts_with("tlk_"), "{id}");
        fake.lock().unwrap().refuse_next = vec![402];
        let e = did.create_talk(&body).await.unwrap_err();
        assert!(matches!(&e, Failure::Quota(m) if m.contains("D-ID POST /talks answered 402")), "{e:?}");
        assert_eq!(did.gate().breaker().name(), "open");
        let e = did.talk(&id).await.unwrap_err();
        assert!(matches!(e, Failure::Unavailable(_)), "{e:?}");
    }

    /// A result larger than the limit is refused (and not kept), whatever D-ID sends.
    #[tokio::test]
    async fn downloads_stop_at_their_limit() {
        let fake = fake_did(false, false, vec![7u8; 4096]).await;
        let did = client(&fake, FAKE_KEY);
        let base = fake.lock().unwrap().base.clone();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("r.mp4");
        let e = did.download(&format!("{base}/results/x.mp4"), &dest, 1000).await.unwrap_err();
        assert!(matches!(&e, Failure::Final(m) if m.contains("larger than 1000 bytes")), "{e:?}");
        assert!(!dest.exists(), "the partial result is removed");
    }
}
