//! The load generator against a small real HTTP/1.1 keep-alive server written here on raw
//! sockets, which counts what it served: the report must agree with the server.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reelsmith_loadgen::{
    HEALTH, LoadConfig, LoadError, POLL, SUBMIT, Scenario, ThinkTime, check, parse_thresholds, run,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, PartialEq)]
enum Health {
    Ok,
    Fails,
    RateLimited,
}

#[derive(Default)]
struct Served {
    connections: AtomicU64,
    health: AtomicU64,
    submit: AtomicU64,
    list: AtomicU64,
    poll: AtomicU64,
    other: AtomicU64,
    unauthorized: AtomicU64,
    jobs: AtomicU64,
    titles: Mutex<HashSet<String>>,
}

struct State {
    served: Served,
    health: Health,
    api_key: Option<&'static str>,
}

async fn start(health: Health, api_key: Option<&'static str>, jobs: u64) -> (String, Arc<State>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(State { served: Served::default(), health, api_key });
    state.served.jobs.store(jobs, SeqCst);
    let s = state.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            s.served.connections.fetch_add(1, SeqCst);
            tokio::spawn(connection(sock, s.clone()));
        }
    });
    (url, state)
}

/// Serves requests on one keep-alive connection until the client closes it.
async fn connection(mut sock: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let (method, target) = (request_line.next().unwrap_or(""), request_line.next().unwrap_or(""));
        let (mut length, mut auth) = (0usize, String::new());
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "authorization" => auth = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        while buf.len() < head_end + length {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let (status, extra, reply) = route(&state, method, target, &auth, &body);
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{reply}",
            reply.len()
        );
        if sock.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn route(state: &State, method: &str, target: &str, auth: &str, body: &[u8]) -> (u16, &'static str, String) {
    let s = &state.served;
    if let Some(key) = state.api_key
        && auth != format!("Bearer {key}")
    {
        s.unauthorized.fetch_add(1, SeqCst);
        return (401, "", r#"{"error":"unauthorized"}"#.into());
    }
    match (method, target) {
        ("GET", "/health") => {
            s.health.fetch_add(1, SeqCst);
            match state.health {
                Health::Ok => (200, "", r#"{"status":"ok"}"#.into()),
                Health::Fails => (500, "", r#"{"error":"down"}"#.into()),
                Health::RateLimited => (429, "Retry-After: 1\r\n", r#"{"error":"slow down"}"#.into()),
            }
        }
        ("GET", "/api/v1/generations?limit=100") => {
            s.list.fetch_add(1, SeqCst);
            let n = s.jobs.load(SeqCst).min(100);
            let items: Vec<String> = (0..n).map(|i| format!(r#"{{"id":"job-{i}"}}"#)).collect();
            (200, "", format!(r#"{{"items":[{}],"next_cursor":null}}"#, items.join(",")))
        }
        ("POST", "/api/v1/generations") => {
            s.submit.fetch_add(1, SeqCst);
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                return (400, "", r#"{"error":"bad json"}"#.into());
            };
            let title = v["spec"]["scenes"][0]["title"].as_str().unwrap_or("").to_string();
            s.titles.lock().unwrap().insert(title);
            let id = s.jobs.fetch_add(1, SeqCst);
            (202, "", format!(r#"{{"id":"job-{id}","status":"queued"}}"#))
        }
        ("GET", t) if t.starts_with("/api/v1/generations/job-") => {
            s.poll.fetch_add(1, SeqCst);
            match t["/api/v1/generations/job-".len()..].parse::<u64>() {
                Ok(i) if i < s.jobs.load(SeqCst) => (200, "", format!(r#"{{"id":"job-{i}","status":"queued"}}"#)),
                _ => (404, "", r#"{"error":"no such job"}"#.into()),
            }
        }
        _ => {
            s.other.fetch_add(1, SeqCst);
            (404, "", r#"{"error":"not found"}"#.into())
        }
    }
}

fn config(url: String, users: usize, duration_ms: u64, scenario: Scenario) -> LoadConfig {
    LoadConfig {
        url,
        users,
        duration: Duration::from_millis(duration_ms),
        scenario,
        request_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_load_matches_what_the_server_served() {
    let (url, state) = start(Health::Ok, Some("secret-key"), 0).await;
    let cfg = LoadConfig {
        api_key: Some("secret-key".into()),
        ramp_up: Duration::from_millis(200),
        ..config(url, 20, 2000, Scenario::mixed())
    };
    let report = run(&cfg).await.unwrap();
    let s = &state.served;
    let count = |label: &str| report.endpoints.get(label).map_or(0, |e| e.count);

    // The server knew no job: setup listed them (none) and submitted one.
    assert_eq!(report.setup_requests, 2);
    assert_eq!(s.list.load(SeqCst), 1);
    assert_eq!(count(HEALTH), s.health.load(SeqCst));
    assert_eq!(count(SUBMIT) + 1, s.submit.load(SeqCst));
    assert_eq!(count(POLL), s.poll.load(SeqCst));
    assert_eq!(s.other.load(SeqCst), 0);
    assert_eq!(s.unauthorized.load(SeqCst), 0, "every request carries the API key");
    assert_eq!(report.total_requests, count(HEALTH) + count(SUBMIT) + count(POLL));
    assert_eq!(report.total_errors, 0, "{}", report.to_table());
    // Each submission was a new job: {{n}} differed every time.
    assert_eq!(s.titles.lock().unwrap().len() as u64, s.submit.load(SeqCst));

    let total = report.total_requests as f64;
    assert!(total > 200.0, "only {total} requests in 2 s:\n{}", report.to_table());
    for (label, want) in [(HEALTH, 30.0), (SUBMIT, 20.0), (POLL, 50.0)] {
        // Five standard deviations of a binomial proportion, at least 2 points.
        let tolerance = (500.0 * (want / 100.0 * (1.0 - want / 100.0) / total).sqrt()).max(2.0);
        let got = count(label) as f64 * 100.0 / total;
        assert!(
            (got - want).abs() < tolerance,
            "{label}: {got:.1}% of {total} requests, expected {want}±{tolerance:.1}%"
        );
        let e = &report.endpoints[label];
        assert!(e.p50_ms > 0.0 && e.p50_ms <= e.p95_ms && e.p95_ms <= e.p99_ms && e.p99_ms <= e.max_ms);
        assert_eq!(e.statuses.values().sum::<u64>(), e.count);
    }
    // The run lasts its duration plus the tail of requests in flight (bounded by their timeout).
    assert!(report.duration_s >= 2.0 && report.duration_s < 12.0, "{}", report.duration_s);
    assert!((report.rps - total / report.duration_s).abs() < 1e-6);
    // Keep-alive: connections are reused, about one per user, not one per request.
    let conns = s.connections.load(SeqCst);
    assert!(conns <= 2 * 20 + 2, "{conns} connections for {total} requests");

    assert!(check(&report, &parse_thresholds("p99>10s,errors>0,error_rate>0%").unwrap()).is_empty());
    let violations = check(&report, &parse_thresholds("p50>0ms").unwrap());
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].starts_with("p50>0ms"), "{violations:?}");
}

#[tokio::test]
async fn server_errors_are_counted_per_endpoint() {
    let (url, state) = start(Health::Fails, None, 0).await;
    let report = run(&config(url, 2, 300, Scenario::Health)).await.unwrap();
    let health = &report.endpoints[HEALTH];
    assert!(health.count > 0);
    assert_eq!(health.count, state.served.health.load(SeqCst));
    assert_eq!(health.errors, health.count);
    assert_eq!(health.statuses.get(&500), Some(&health.count));
    assert_eq!((report.total_errors, report.setup_requests), (health.count, 0));
    assert_eq!(report.endpoints.len(), 1);
    assert_eq!(check(&report, &parse_thresholds("GET /health:error_rate>50%").unwrap()).len(), 1);
    assert!(report.to_table().contains("500:"));
}

#[tokio::test]
async fn rate_limited_users_wait_for_retry_after() {
    let (url, state) = start(Health::RateLimited, None, 0).await;
    let report = run(&config(url, 3, 800, Scenario::Health)).await.unwrap();
    let health = &report.endpoints[HEALTH];
    // Each user got a 429 with Retry-After: 1 and waited out the rest of the 0.8 s run.
    assert_eq!(health.count, 3);
    assert_eq!(state.served.health.load(SeqCst), 3);
    assert_eq!((health.rate_limited, health.errors), (3, 3));
    assert_eq!(check(&report, &parse_thresholds("rate_limited>0").unwrap()).len(), 1);
}

#[tokio::test]
async fn polls_known_jobs_without_submitting() {
    let (url, state) = start(Health::Ok, None, 5).await;
    let cfg = LoadConfig {
        think_time: ThinkTime { min: Duration::ZERO, max: Duration::from_millis(2) },
        ..config(url, 4, 300, Scenario::Poll)
    };
    let report = run(&cfg).await.unwrap();
    assert_eq!(report.setup_requests, 1);
    assert_eq!(state.served.submit.load(SeqCst), 0);
    assert_eq!(report.endpoints[POLL].count, state.served.poll.load(SeqCst));
    assert_eq!(report.total_errors, 0, "polled only listed ids:\n{}", report.to_table());
}

#[tokio::test]
async fn refused_connections_are_transport_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let cfg = LoadConfig { think_time: "5ms".parse().unwrap(), ..config(url.clone(), 1, 200, Scenario::Health) };
    let report = run(&cfg).await.unwrap();
    let health = &report.endpoints[HEALTH];
    assert!(health.count > 0);
    assert_eq!((health.errors, health.transport_errors), (health.count, health.count));
    assert!(health.statuses.is_empty());

    // Polling needs a job; with no server, setup fails with a clear error instead.
    let err = run(&config(url, 1, 200, Scenario::Poll)).await.unwrap_err();
    assert!(matches!(err, LoadError::Setup { .. }), "{err}");
}
