//! A real `reelsmith serve` process on a random port, a real HTTP client, and a local webhook
//! receiver.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Server {
    pub url: String,
    pub data_dir: PathBuf,
    child: Child,
    env: Vec<(String, String)>,
    /// `serve`, `serve --no-worker` or `worker`.
    role: Vec<String>,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_reelsmith");

impl Server {
    /// Starts a server with its own data dir; `env` adds REELSMITH_* settings.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_as(&["serve"], data_dir, env)
    }

    /// Starts `reelsmith <role…>` (`serve`, `serve --no-worker`, `worker`).
    pub fn start_as(role: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let role: Vec<String> = role.iter().map(|r| r.to_string()).collect();
        let (child, url) = spawn(&role, data_dir, &env);
        Self {
            url,
            data_dir: data_dir.into(),
            child,
            env,
            role,
            client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
            token: None,
        }
    }

    /// `kill -9`, then start again on the same data dir (a new port).
    pub fn kill_and_restart(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        let (child, url) = spawn(&self.role, &self.data_dir, &self.env);
        self.child = child;
        self.url = url;
    }

    /// `kill -9`, and wait for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name it was given (`REELSMITH_NODE_NAME`), if any.
    pub fn node_name(&self) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == "REELSMITH_NODE_NAME").map(|(_, v)| v.as_str())
    }

    /// SIGTERM; returns how long the process took to exit (panics after `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Duration {
        let t = Instant::now();
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "clean exit after SIGTERM: {status}");
                return t.elapsed();
            }
            assert!(t.elapsed() < limit, "still running {limit:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(m, format!("{}{path}", self.url));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.req(reqwest::Method::GET, path)
    }
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.req(reqwest::Method::POST, path)
    }
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.req(reqwest::Method::DELETE, path)
    }

    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        let r = self.post("/api/v1/generations").json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn status(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/generations/{id}")).send().await.unwrap().json().await.unwrap()
    }

    /// Polls until the generation is final (or panics after `limit`).
    pub async fn wait_final(&self, id: &str, limit: Duration) -> Value {
        let t = Instant::now();
        loop {
            let s = self.status(id).await;
            if matches!(s["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return s;
            }
            assert!(t.elapsed() < limit, "generation {id} not finished after {limit:?}: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(role: &[String], data_dir: &Path, env: &[(String, String)]) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    // Loopback on a free port, unless the test asks for another address.
    let bind = env.iter().find(|(k, _)| k == "REELSMITH_BIND").map_or("127.0.0.1:0", |(_, v)| v.as_str());
    cmd.args(role)
        .args(["--bind", bind, "--data-dir"])
        .arg(data_dir)
        .env("REELSMITH_CACHE_DIR", data_dir.join("cache"))
        .env("REELSMITH_LEASE_SECS", "1")
        .env("REELSMITH_RETRY_BASE_MS", "200")
        .env("REELSMITH_WEBHOOKS__RETRY_BASE_MS", "100")
        .env("REELSMITH_RENDER_NICE", "0")
        .env("REELSMITH_WEBHOOKS__ALLOW_PRIVATE", "true")
        .env("REELSMITH_FETCH_ALLOW_PRIVATE", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start reelsmith serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url =
        line.trim().split_once("listening on ").map(|(_, u)| u).unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, url.to_string())
}

/// `reelsmith keys create <name> <options…>` on `data_dir`; returns the new key's token.
pub fn create_key(data_dir: &Path, name: &str, options: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["keys", "--data-dir"])
        .arg(data_dir)
        .args(["create", name])
        .args(options)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A tiny storyboard: a title card with narration, then a colour card (about 2.5 s).
pub fn small_spec(text: &str) -> Value {
    json!({
        "version": 1,
        "output": {"width": 320, "height": 180, "fps": 15},
        "scenes": [
            {"title": "Hello", "narration": {"text": text}, "background": {"color": "#204080"}},
            {"background": {"color": "#c03020"}, "duration": 1}
        ]
    })
}

/// A spec that renders for a while (for cancel and crash tests).
pub fn long_spec(tag: &str, seconds: f64) -> Value {
    json!({
        "version": 1,
        "output": {"width": 320, "height": 180, "fps": 30, "quality": {"preset": "medium"}},
        "scenes": [
            {"title": tag, "duration": seconds, "motion": {"type": "ken-burns", "zoom_to": 1.5},
             "background": {"gradient": {"from": "#000000", "to": "#ffffff"}}},
        ]
    })
}

#[derive(Clone, Debug)]
pub struct Delivery {
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

/// A webhook receiver answering with the given statuses in turn (then 200).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    pub async fn start(statuses: &[u16]) -> Self {
        let got: Arc<Mutex<Vec<Delivery>>> = Default::default();
        let plan: Arc<Mutex<VecDeque<u16>>> = Arc::new(Mutex::new(statuses.iter().copied().collect()));
        let (g, p) = (got.clone(), plan.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (g, p) = (g.clone(), p.clone());
                async move {
                    g.lock().unwrap().push(Delivery { headers, body });
                    let code = p.lock().unwrap().pop_front().unwrap_or(200);
                    axum::http::StatusCode::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{addr}/hook"), got }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` deliveries arrived.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Delivery> {
        let t = Instant::now();
        loop {
            let d = self.deliveries();
            if d.len() >= n {
                return d;
            }
            assert!(t.elapsed() < limit, "only {} of {n} webhook deliveries after {limit:?}", d.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn webhook_secret(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("webhook_secret")).unwrap().trim().to_string()
}

pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_format", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
