//! Scale-out end to end: an API node and worker nodes as separate processes, each with its own
//! data folder and cache (as on separate machines), sharing only real PostgreSQL, Redis and S3
//! servers. Faults are injected into private Redis/PostgreSQL instances, never the shared ones.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reelsmith_store::postgres::pg_testing::PrivatePostgres;
use serde_json::{Value, json};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(240);

fn postgres_url() -> String {
    std::env::var("REELSMITH_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}
fn redis_url() -> String {
    std::env::var("REELSMITH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}
fn s3_endpoint() -> String {
    std::env::var("REELSMITH_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9333".into())
}

/// One deployment's shared backends: a PostgreSQL schema, a Redis prefix, an S3 prefix, all
/// private to the test and removed afterwards.
struct Cluster {
    dir: tempfile::TempDir,
    database_url: String,
    schema: String,
    redis_url: String,
    tag: String,
    nodes: std::sync::atomic::AtomicUsize,
}

impl Cluster {
    fn new(database_url: String, redis_url: String) -> Self {
        let tag = reelsmith_store::new_id("t").replace('-', "_");
        Self {
            dir: tempfile::tempdir().unwrap(),
            database_url,
            schema: tag.clone(),
            redis_url,
            tag,
            nodes: Default::default(),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        let s3 = s3_endpoint();
        [
            ("REELSMITH_DATABASE__URL", self.database_url.as_str()),
            ("REELSMITH_DATABASE__SCHEMA", self.schema.as_str()),
            ("REELSMITH_DATABASE__POOL_SIZE", "4"),
            ("REELSMITH_REDIS__URL", self.redis_url.as_str()),
            ("REELSMITH_REDIS__PREFIX", self.tag.as_str()),
            ("REELSMITH_REDIS__CACHE_TTL_SECS", "600"),
            ("REELSMITH_S3__BUCKET", "reelsmith-test"),
            ("REELSMITH_S3__ENDPOINT", s3.as_str()),
            ("REELSMITH_S3__PREFIX", self.tag.as_str()),
            ("REELSMITH_S3__ALLOW_HTTP", "true"),
            ("REELSMITH_S3__CREATE_BUCKET", "true"),
            ("REELSMITH_S3__ACCESS_KEY_ID", "test"),
            ("REELSMITH_S3__SECRET_ACCESS_KEY", "test"),
            ("REELSMITH_DISTRIBUTED_RENDER", "true"),
            // Even the tests' few-second videos fan out.
            ("REELSMITH_DISTRIBUTED_MIN_SECONDS", "0"),
            ("REELSMITH_SEGMENT_WORKERS", "1"),
            ("REELSMITH_LEASE_SECS", "1.5"),
            ("REELSMITH_WEBHOOKS__SECRET", "whsec_scaleout"),
            ("REELSMITH_SIGNING_SECRET", "scaleout-signing-secret-0123456789abcdef"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A node with its own data folder and cache, as if on another machine.
    fn node(&self, role: &[&str], extra: &[(&str, &str)]) -> Server {
        let n = self.nodes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = self.dir.path().join(format!("node{n}"));
        let mut env = self.env();
        env.push(("REELSMITH_NODE_NAME".into(), format!("node{n}")));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Server::start_as(role, &data, &env)
    }

    /// Stops the nodes, then removes the schema and the stored files.
    async fn cleanup(self, nodes: Vec<Server>) {
        drop(nodes);
        if let Ok(pg) = reelsmith_store::PgStore::connect(&self.database_url, Some(&self.schema), 1).await {
            let _ = pg.drop_schema().await;
        }
        let c = reelsmith_store::S3Config {
            endpoint: Some(s3_endpoint()),
            allow_http: true,
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            ..reelsmith_store::S3Config::new("reelsmith-test")
        };
        if let Ok(s3) = reelsmith_store::S3Artifacts::new(c) {
            use reelsmith_store::ArtifactStore;
            // Everything this deployment stored is under its prefix.
            let _ = s3.delete_prefix(&self.tag).await;
        }
        // Redis keys expire on their own (REELSMITH_REDIS_CACHE_TTL_SECS below).
    }
}

/// A storyboard of `n` titled colour cards of 1.2 s, cut between scenes (one segment each).
fn storyboard(n: usize, tag: &str) -> Value {
    let colours = ["#c03020", "#20a040", "#2040c0", "#c0a020", "#a020c0", "#20a0c0", "#808080", "#c06020"];
    let scenes: Vec<Value> = (0..n)
        .map(|i| {
            json!({"title": format!("{tag} {i}"), "background": {"color": colours[i % colours.len()]},
                   "duration": 1.2})
        })
        .collect();
    json!({"version": 1, "output": {"width": 320, "height": 180, "fps": 15}, "scenes": scenes})
}

/// Per segment: the worker and outcome of every attempt, across all segment jobs of the video
/// (a render attempt taken over after a crash fans out again, so a segment may have two jobs).
fn segment_workers(status: &Value) -> BTreeMap<u64, Vec<(String, String)>> {
    let mut out: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    for j in status["segment_jobs"].as_array().into_iter().flatten() {
        let attempts = j["attempts"].as_array().unwrap();
        out.entry(j["index"].as_u64().unwrap()).or_default().extend(
            attempts
                .iter()
                .map(|a| (a["worker"].as_str().unwrap().to_string(), a["outcome"].as_str().unwrap().to_string())),
        );
    }
    out
}

/// Per-frame MD5s of a video's picture.
fn frame_md5s(video: &Path) -> Vec<String> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(video)
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit(',').next().unwrap().trim().to_string())
        .collect()
}

async fn download(node: &Server, id: &str, to: &Path) {
    let r = node.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    std::fs::write(to, r.bytes().await.unwrap()).unwrap();
}

async fn ready(node: &Server) -> Value {
    node.get("/ready").send().await.unwrap().json().await.unwrap()
}

/// Whether `worker` (as attempts name it: `<node name>-<queue>-<n>`) runs in `node`.
fn is_node(worker: &str, node: &Server) -> bool {
    node.node_name().is_some_and(|name| worker.starts_with(&format!("{name}-")))
}

#[tokio::test(flavor = "multi_thread")]
async fn api_node_and_two_workers_share_postgres_redis_and_s3() {
    let c = Cluster::new(postgres_url(), redis_url());
    let api = c.node(&["serve", "--no-worker"], &[]);
    let w1 = c.node(&["worker"], &[]);
    let w2 = c.node(&["worker"], &[]);
    let hook = Receiver::start(&[]).await;

    // Every node is ready, on the shared backends.
    for n in [&api, &w1, &w2] {
        let r = ready(n).await;
        assert_eq!(r["status"], "ready", "{r}");
        assert_eq!(r["checks"]["shared_cache"]["ok"], true, "{r}");
        assert!(r["checks"]["storage"]["backend"].as_str().unwrap().contains("s3://reelsmith-test"), "{r}");
    }
    assert_eq!(ready(&api).await["role"], "api");
    assert_eq!(ready(&w1).await["role"], "worker");
    // Workers serve probes only.
    assert_eq!(w1.get("/api/v1/generations").send().await.unwrap().status(), 404);

    // 20 jobs through the API node: each completes exactly once.
    let mut ids = vec![];
    for i in 0..20 {
        let body = json!({"spec": small_spec(&format!("Job {i}.")), "webhook_url": hook.url});
        let (code, g) = api.submit(&body).await;
        assert_eq!(code, 202, "{g}");
        ids.push(g["id"].as_str().unwrap().to_string());
    }
    let mut by_worker: BTreeMap<u32, usize> = BTreeMap::new();
    for id in &ids {
        let s = api.wait_final(id, LIMIT).await;
        assert_eq!(s["status"], "succeeded", "{s}");
        let attempts = s["attempt_history"].as_array().unwrap();
        assert_eq!(attempts.iter().filter(|a| a["outcome"] == "succeeded").count(), 1, "{s}");
        let w = attempts.last().unwrap()["worker"].as_str().unwrap();
        for n in [&w1, &w2] {
            if is_node(w, n) {
                *by_worker.entry(n.pid()).or_default() += 1;
            }
        }
    }
    assert_eq!(by_worker.values().sum::<usize>(), 20, "every render ran on one of the two workers: {by_worker:?}");
    // Renders run in processes of their own: what they stored in the shared tier is counted by
    // the worker that started them (`/ready` shows it).
    for n in [&w1, &w2].into_iter().filter(|n| by_worker.contains_key(&n.pid())) {
        let t = Instant::now();
        loop {
            let r = ready(n).await;
            if r["checks"]["shared_cache"]["stores"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(t.elapsed() < LIMIT, "the worker counted no stores of its renders: {r}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deliveries = hook.wait_for(20, LIMIT).await;
    let succeeded: Vec<String> = deliveries
        .iter()
        .map(|d| serde_json::from_str::<Value>(&d.body).unwrap())
        .filter(|e| e["type"] == "generation.succeeded")
        .map(|e| e["data"]["id"].as_str().unwrap().to_string())
        .collect();
    let unique: HashSet<&String> = succeeded.iter().collect();
    assert_eq!((succeeded.len(), unique.len()), (20, 20), "one success event per job");
    // Results stored by a worker download through the API node (from S3), with Range.
    let r =
        api.get(&format!("/api/v1/generations/{}/video", ids[0])).header("range", "bytes=0-7").send().await.unwrap();
    assert_eq!(r.status(), 206);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(&r.bytes().await.unwrap()[4..8], b"ftyp");
    // Another API node hands downloads to storage: a 307 to a presigned link that serves ranges.
    let api2 = c.node(&["serve", "--no-worker"], &[("REELSMITH_S3__PRESIGNED_DOWNLOADS", "true")]);
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let video = format!("{}/api/v1/generations/{}/video", api2.url, ids[0]);
    let r = no_redirects.get(&video).send().await.unwrap();
    assert_eq!(r.status(), 307);
    let link = r.headers()["location"].to_str().unwrap().to_string();
    assert!(link.starts_with(&s3_endpoint()) && link.contains("X-Amz-Signature"), "{link}");
    let r = no_redirects.get(&link).header("range", "bytes=4-7").send().await.unwrap();
    assert_eq!(r.status(), 206, "storage serves the range itself");
    assert_eq!(&r.bytes().await.unwrap()[..], b"ftyp");
    let r = no_redirects.get(&video).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304, "revalidation is still answered by the API node");
    drop(api2);

    // A 6-scene video: its segments are rendered by both workers, and the video is the same,
    // frame for frame, as a single-process render of the same spec.
    let spec = storyboard(6, "Six");
    let (code, g) = api.submit(&json!({"spec": spec})).await;
    assert_eq!(code, 202, "{g}");
    let id = g["id"].as_str().unwrap().to_string();
    let events = api.get(&format!("/api/v1/generations/{id}/events")).send().await.unwrap();
    let s = api.wait_final(&id, LIMIT).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    let segs = segment_workers(&s);
    assert_eq!(segs.len(), 6, "one segment job per scene: {s}");
    let makers: HashSet<u32> = segs
        .values()
        .filter_map(|a| a.iter().find(|(_, o)| o == "succeeded"))
        .filter_map(|(w, _)| [&w1, &w2].into_iter().find(|n| is_node(w, n)).map(|n| n.pid()))
        .collect();
    assert_eq!(makers.len(), 2, "both workers rendered segments: {segs:?}");
    let report: Value =
        api.get(&format!("/api/v1/generations/{id}/report")).send().await.unwrap().json().await.unwrap();
    let report_workers: HashSet<&str> =
        report["segments"].as_array().unwrap().iter().filter_map(|s| s["worker"].as_str()).collect();
    assert!(report_workers.len() >= 2, "the report names the workers of the segments: {}", report["segments"]);
    let distributed = c.dir.path().join("distributed.mp4");
    download(&api, &id, &distributed).await;

    let local_dir = c.dir.path().join("local");
    std::fs::create_dir_all(&local_dir).unwrap();
    let spec_path = local_dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let single = local_dir.join("single.mp4");
    let out = std::process::Command::new(BIN)
        // Default encoder threads: the last segment may get every core, a worker's one.
        .args(["render", "--quiet", "--cache-dir"])
        .arg(local_dir.join("cache"))
        .arg(&spec_path)
        .arg("-o")
        .arg(&single)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = (frame_md5s(&distributed), frame_md5s(&single));
    assert_eq!(a.len(), 6 * 18, "6 scenes of 1.2 s at 15 fps");
    assert_eq!(a, b, "the distributed render is frame-identical to a single-process render");

    // The API node saw the render's live progress although no worker runs in it.
    let progress: Vec<f64> =
        crate::sse_until_final(events).await.iter().filter_map(|e| e["progress"].as_f64()).collect();
    assert!(progress.iter().any(|p| *p > 0.0 && *p < 1.0), "progress in between: {progress:?}");
    assert!(progress.windows(2).all(|w| w[1] >= w[0]), "progress never goes back: {progress:?}");
    c.cleanup(vec![api, w1, w2]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_segment_loses_its_segment_to_another() {
    let c = Cluster::new(postgres_url(), redis_url());
    let api = c.node(&["serve", "--no-worker"], &[]);
    let w1 = c.node(&["worker"], &[]);
    // This worker takes a segment and holds it (heartbeating) until it is killed.
    let mut w2 = c.node(&["worker"], &[("REELSMITH_FAULT_HANG_SEGMENTS", "1")]);
    let (code, g) = api.submit(&json!({"spec": storyboard(6, "Kill")})).await;
    assert_eq!(code, 202, "{g}");
    let id = g["id"].as_str().unwrap().to_string();
    // Wait until the doomed worker is in the middle of a segment.
    let t = Instant::now();
    let held = loop {
        let s = api.status(&id).await;
        let running = s["segment_jobs"].as_array().into_iter().flatten().find(|j| {
            j["status"] == "running"
                && j["attempts"].as_array().unwrap().last().is_some_and(|a| is_node(a["worker"].as_str().unwrap(), &w2))
        });
        if let Some(j) = running {
            break j["index"].as_u64().unwrap();
        }
        assert!(t.elapsed() < LIMIT, "worker 2 never took a segment: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    w2.kill();
    let s = api.wait_final(&id, LIMIT).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    let segs = segment_workers(&s);
    let attempts = &segs[&held];
    assert!(
        attempts.iter().any(|(w, o)| is_node(w, &w2) && o == "lost"),
        "the killed worker's attempt is recorded as lost: {attempts:?}"
    );
    assert!(
        attempts.iter().any(|(w, o)| is_node(w, &w1) && o == "succeeded"),
        "the other worker took the segment over: {attempts:?}"
    );
    let r = api.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    c.cleanup(vec![api, w1, w2]).await;
}

/// A private `redis-server` on a free port, to stop and start at will.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
    dir: PathBuf,
}

impl PrivateRedis {
    fn start(dir: &Path) -> Self {
        let port = reelsmith_store::postgres::pg_testing::free_port().unwrap();
        let mut r = Self { port, child: None, dir: dir.to_path_buf() };
        r.start_again();
        r
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
    fn start_again(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn renders_go_on_without_redis_and_ready_says_so() {
    let scratch = tempfile::tempdir().unwrap();
    let mut redis = PrivateRedis::start(scratch.path());
    let c = Cluster::new(postgres_url(), redis.url());
    let api = c.node(&["serve", "--no-worker"], &[]);
    let w1 = c.node(&["worker"], &[]);
    let w2 = c.node(&["worker"], &[]);
    let (_, g) = api.submit(&json!({"spec": storyboard(4, "Before")})).await;
    let first = g["id"].as_str().unwrap().to_string();
    // Redis goes away while the first render may still be running.
    let s = api.status(&first).await;
    assert_ne!(s["status"], "failed", "{s}");
    redis.stop();
    let (code, g) = api.submit(&json!({"spec": storyboard(4, "Without")})).await;
    assert_eq!(code, 202, "submissions do not need Redis: {g}");
    let second = g["id"].as_str().unwrap().to_string();
    for id in [&first, &second] {
        let s = api.wait_final(id, LIMIT).await;
        assert_eq!(s["status"], "succeeded", "renders go on without the shared cache: {s}");
        let r = api.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // Ready, but degraded, naming Redis; workers too.
    for n in [&api, &w1] {
        let r = ready(n).await;
        assert_eq!(r["status"], "degraded", "{r}");
        assert_eq!(r["checks"]["shared_cache"]["ok"], false, "{r}");
        assert!(r["checks"]["shared_cache"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
        assert_eq!(r["checks"]["database"]["ok"], true, "{r}");
    }
    // Back again: ready once more.
    redis.start_again();
    let t = Instant::now();
    loop {
        let r = ready(&api).await;
        if r["status"] == "ready" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "not ready after redis returned: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.cleanup(vec![api, w1, w2]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_reconnect_after_postgres_restarts() {
    let pg = PrivatePostgres::start_on_free_port().expect("a private PostgreSQL");
    let c = Cluster::new(pg.url(), redis_url());
    let api = c.node(&["serve", "--no-worker"], &[]);
    let w1 = c.node(&["worker"], &[]);
    let w2 = c.node(&["worker"], &[]);
    let (_, g) = api.submit(&json!({"spec": small_spec("Before the restart.")})).await;
    let first = g["id"].as_str().unwrap().to_string();
    assert_eq!(api.wait_final(&first, LIMIT).await["status"], "succeeded");

    pg.stop().unwrap();
    let r = api.get("/ready").send().await.unwrap();
    assert_eq!(r.status(), 503, "without its database a node is not ready");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["database"]["ok"], false, "{body}");
    pg.start_again().unwrap();

    // The same processes carry on: the API accepts again and a worker renders it.
    let t = Instant::now();
    let second = loop {
        let r = api.post("/api/v1/generations").json(&json!({"spec": small_spec("After the restart.")})).send().await;
        if let Ok(r) = r
            && r.status() == 202
        {
            let g: Value = r.json().await.unwrap();
            break g["id"].as_str().unwrap().to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "the API did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(api.wait_final(&second, LIMIT).await["status"], "succeeded");
    c.cleanup(vec![api, w1, w2]).await;
}

/// A distributed render of a storyboard with a scene D-ID animates: the render job gets D-ID's
/// clip once, and segment jobs on the other worker take it from the shared cache (Redis) rather
/// than calling D-ID again; the scene shows D-ID's pictures.
#[tokio::test(flavor = "multi_thread")]
async fn a_d_id_scene_renders_across_workers_from_one_d_id_call() {
    use crate::talks::{FAKE_KEY, astronaut, did_scene_clip, fake_did};
    let c = Cluster::new(postgres_url(), redis_url());
    let fake = fake_did(false, false, did_scene_clip(c.dir.path())).await;
    let base = fake.lock().unwrap().base.clone();
    let did = [
        ("REELSMITH_DID__API_KEY", FAKE_KEY),
        ("REELSMITH_DID__BASE_URL", base.as_str()),
        ("REELSMITH_DID__POLL_SECS", "0.2"),
    ];
    let api = c.node(&["serve", "--no-worker"], &did);
    let w1 = c.node(&["worker"], &did);
    let w2 = c.node(&["worker"], &did);
    let photo: Value = api
        .post("/api/v1/assets")
        .body(std::fs::read(astronaut()).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut spec = storyboard(4, "D-ID");
    spec["scenes"][1] = json!({"image": format!("asset:{}", photo["id"].as_str().unwrap()),
        "narration": {"text": "Animated once, shown by every worker that needs it."},
        "motion": {"type": "talking-head", "provider": "d-id"}});
    spec["subtitles"] = json!({"enabled": false});
    let (code, g) = api.submit(&json!({"spec": spec})).await;
    assert_eq!(code, 202, "{g}");
    let id = g["id"].as_str().unwrap().to_string();
    let s = api.wait_final(&id, LIMIT).await;
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(fake.lock().unwrap().talks.len(), 1, "one call to D-ID for the whole video");
    let segs = segment_workers(&s);
    let makers: HashSet<String> =
        segs.values().filter_map(|a| a.iter().find(|(_, o)| o == "succeeded")).map(|(w, _)| w.clone()).collect();
    assert!(segs.len() >= 4 && makers.len() == 2, "both workers rendered segments: {segs:?}");
    let video = c.dir.path().join("d-id.mp4");
    download(&api, &id, &video).await;
    // Scene 1 starts at 1.2 s: D-ID's first second is red.
    let sum = crate::common::mean_rgb(&video, 1.7, 0, 0, 320, 180);
    assert!(sum[0] > 180.0 && sum[2] < 70.0, "D-ID's clip in scene 1: {sum:?}");
    c.cleanup(vec![api, w1, w2]).await;
}

/// A provider's request rate holds across worker processes: two workers plan prompts against
/// one language model limited to 120 requests a minute with no burst, so, sharing the limit
/// through Redis, the model sees its requests at least half a second apart whichever worker
/// sends them (each alone would send at once).
#[tokio::test(flavor = "multi_thread")]
async fn a_providers_rate_limit_holds_across_two_worker_processes() {
    use reelsmith_providers::llm::fake::{FakeChat, Reply};

    let c = Cluster::new(postgres_url(), redis_url());
    let fake = FakeChat::start().await;
    fake.respond_with(|body| {
        let topic = body["messages"][1]["content"].as_str().unwrap().lines().next().unwrap().to_string();
        Reply::content(
            json!({"title": "t", "scenes": [{"narration": format!("About {topic}."), "title": null,
                    "visual": {"search_terms": ["sky"], "image_prompt": "sky"}, "motion": "still"}]})
            .to_string(),
        )
    });
    let config = c.dir.path().join("providers.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.llm]\nname = \"openai\"\nbase_url = \"{}\"\nmodel = \"gpt-test\"\nrpm = 120\nburst = 1\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let api = c.node(&["serve", "--no-worker"], &[("REELSMITH_CONFIG", cfg)]);
    let workers = [("REELSMITH_CONFIG", cfg), ("REELSMITH_RENDER_WORKERS", "2")];
    let w1 = c.node(&["worker"], &workers);
    let w2 = c.node(&["worker"], &workers);
    for n in [&api, &w1, &w2] {
        assert_eq!(ready(n).await["status"], "ready");
    }
    let mut ids = vec![];
    for topic in ["tides", "dunes", "comets", "moss", "glass", "salt"] {
        let body = json!({"prompt": {"topic": topic, "duration_s": 5, "size": {"width": 320, "height": 180}}});
        let (code, g) = api.submit(&body).await;
        assert_eq!(code, 202, "{g}");
        ids.push(g["id"].as_str().unwrap().to_string());
    }
    let mut planners = HashSet::new();
    for id in &ids {
        let s = api.wait_final(id, LIMIT).await;
        assert_eq!(s["status"], "succeeded", "{s}");
        let w = s["attempt_history"][0]["worker"].as_str().unwrap().to_string();
        planners.insert([&w1, &w2].iter().position(|n| is_node(&w, n)).expect("planned by a worker"));
    }
    assert_eq!(planners.len(), 2, "both workers planned prompts");
    let mut at: Vec<Instant> = fake.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 6, "one model call per prompt");
    at.sort();
    for pair in at.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= Duration::from_millis(450), "requests {gap:?} apart, under the shared 0.5 s: {at:?}");
    }
    c.cleanup(vec![api, w1, w2]).await;
}
