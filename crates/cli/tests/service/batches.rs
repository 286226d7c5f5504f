//! Stored templates and batches through a real server: a template kept by id and rendered by
//! name; a batch of 200 rows with one bad row (reported and skipped, the rest rendered below
//! an interactive request, one webhook, a manifest in JSON and CSV); a CSV upload cancelled
//! mid-batch; 10,000 rows accepted in one request; a key's batch kept to half its concurrency
//! while its own requests still get in.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(300);

/// One short scene whose title carries `{{ NAME }}`: cheap to render many times.
fn card_template() -> Value {
    json!({
        "fields": {
            "NAME": {"type": "string", "max_length": 20},
            "BRAND": {"type": "color", "default": "#2040c0"}
        },
        "version": 1,
        "output": {"width": 160, "height": 96, "fps": 10},
        "scenes": [{"duration": 1.0, "background": {"color": "{{ BRAND }}"}, "title": "Hi {{ NAME }}"}]
    })
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

/// Polls a batch until its status is `want` and nothing of it is queued or running.
async fn wait_batch(s: &Server, id: &str, want: &str) -> Value {
    let t = Instant::now();
    loop {
        let (_, b) = json_of(s.get(&format!("/api/v1/batches/{id}?limit=1")).send().await.unwrap()).await;
        let busy = ["pending", "queued", "running"].iter().any(|k| b["counts"][k].as_u64().unwrap_or(0) > 0);
        if b["status"] == want && !busy {
            return b;
        }
        assert!(t.elapsed() < LIMIT, "batch {id} not {want} after {LIMIT:?}: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_templates_are_checked_kept_per_key_and_rendered_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let (code, t) = json_of(
        s.post("/api/v1/templates")
            .json(&json!({"name": "Greeting", "template": crate::common::greeting_template()}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 201, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("tpl_"), "{t}");
    assert_eq!(t["fields"]["NAME"]["max_length"], 20);
    let (_, listed) = json_of(s.get("/api/v1/templates").send().await.unwrap()).await;
    assert_eq!(listed["items"][0]["id"], id.as_str(), "{listed}");
    assert!(listed["items"][0].get("template").is_none(), "a list leaves the documents out");
    let (_, one) = json_of(s.get(&format!("/api/v1/templates/{id}")).send().await.unwrap()).await;
    assert_eq!(one["template"], crate::common::greeting_template());

    // Refused templates name each place; nothing is stored.
    let mut bad = crate::common::greeting_template();
    bad["scenes"][0]["title"] = json!("Hi {{ NICK }}");
    bad["fields"]["PHOTO"]["default"] = json!("asset:ast_missing");
    let (code, e) =
        json_of(s.post("/api/v1/templates").json(&json!({"name": "Bad", "template": bad})).send().await.unwrap()).await;
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("template_invalid")), "{e}");
    assert_eq!(e["error"]["issues"][0]["path"], "template.scenes[0].title", "{e}");
    let mut missing_file = crate::common::greeting_template();
    missing_file["fields"]["PHOTO"]["default"] = json!("asset:ast_missing");
    let (code, e) = json_of(
        s.post("/api/v1/templates").json(&json!({"name": "Bad", "template": missing_file})).send().await.unwrap(),
    )
    .await;
    assert_eq!(code, 422, "{e}");
    assert_eq!(e["error"]["issues"][0]["path"], "template.scenes[1].image", "the default names no asset: {e}");
    let unnamed = json!({"name": " ", "template": crate::common::greeting_template()});
    let (code, e) = json_of(s.post("/api/v1/templates").json(&unnamed).send().await.unwrap()).await;
    assert_eq!((code, e["error"]["issues"][0]["path"].as_str()), (422, Some("name")), "{e}");
    let (_, listed) = json_of(s.get("/api/v1/templates").send().await.unwrap()).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "refused templates are not stored: {listed}");

    // Rendered by id, Shotstack's row form and all.
    let img = image::RgbImage::from_pixel(320, 180, image::Rgb([30, 200, 60]));
    let mut png = std::io::Cursor::new(vec![]);
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let r = s.post("/api/v1/assets").header("x-file-name", "green.png").body(png.into_inner()).send().await.unwrap();
    let photo = format!("asset:{}", r.json::<Value>().await.unwrap()["id"].as_str().unwrap());
    let merge = json!([{"find": "NAME", "replace": "Ada"}, {"find": "PHOTO", "replace": photo}]);
    let (code, g) = s.submit(&json!({"template": id, "merge": merge})).await;
    assert_eq!(code, 202, "{g}");
    let done = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["spec"]["scenes"][0]["title"], "Hello, Ada");
    let (code, e) = s.submit(&json!({"template": id, "merge": {"NAME": "Ada"}})).await;
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("merge_invalid")), "{e}");
    assert_eq!(e["error"]["issues"][0]["path"], "merge.PHOTO");

    // Deleted: gone for reads and for generations.
    assert_eq!(s.delete(&format!("/api/v1/templates/{id}")).send().await.unwrap().status(), 204);
    assert_eq!(s.get(&format!("/api/v1/templates/{id}")).send().await.unwrap().status(), 404);
    let (code, e) = s.submit(&json!({"template": id, "merge": merge})).await;
    assert_eq!((code, e["error"]["code"].as_str()), (404, Some("not_found")), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_renders_every_good_row_below_interactive_work_and_reports_each_row() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[("REELSMITH_BATCH_POLL_MS", "50"), ("REELSMITH_BATCH_CONCURRENCY", "4"), ("REELSMITH_RENDER_WORKERS", "2")],
    );
    let hook = Receiver::start(&[]).await;
    let mut rows: Vec<Value> = (0..200).map(|i| json!({"NAME": format!("Row {i}")})).collect();
    rows[57] = json!({"NAME": "a name far too long for the card"});
    rows[120] = json!([{"find": "NAME", "replace": "Shotstack"}, {"find": "BRAND", "replace": "#c03020"}]);
    let (code, b) = json_of(
        s.post("/api/v1/batches")
            .json(&json!({"template": card_template(), "rows": rows, "webhook_url": hook.url, "metadata": {"campaign": "autumn"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 202, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!((b["total"].as_u64(), b["counts"]["invalid"].as_u64()), (Some(200), Some(1)), "{b}");
    assert_eq!(b["invalid_rows"][0]["row"], 57, "{b}");
    assert_eq!(b["invalid_rows"][0]["error"]["issues"][0]["path"], "merge.NAME", "{b}");

    // An interactive request made now renders before most of the batch.
    let (code, g) = s.submit(&json!({"spec": small_spec("Interactive.")})).await;
    assert_eq!(code, 202, "{g}");
    let interactive = s.wait_final(g["id"].as_str().unwrap(), LIMIT).await;
    assert_eq!(interactive["status"], "succeeded");

    let done = wait_batch(&s, &id, "completed").await;
    assert_eq!(done["counts"], json!({"invalid": 1, "succeeded": 199}), "{done}");
    assert_eq!(done["progress"], 100.0);

    let (_, manifest) = json_of(s.get(&format!("/api/v1/batches/{id}/manifest")).send().await.unwrap()).await;
    let rows = manifest["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 200);
    assert_eq!((rows[57]["status"].as_str(), rows[57]["generation_id"].is_null()), (Some("invalid"), true));
    let mut after_interactive = 0;
    for (i, row) in rows.iter().enumerate().filter(|(i, _)| *i != 57) {
        assert_eq!(row["status"], "succeeded", "{row}");
        let g = row["generation_id"].as_str().unwrap();
        assert_eq!(row["video_url"], format!("/api/v1/generations/{g}/video"));
        if i % 40 == 0 || i == 120 {
            let st = s.status(g).await;
            let name = if i == 120 { "Shotstack".to_string() } else { format!("Row {i}") };
            assert_eq!(st["spec"]["scenes"][0]["title"], format!("Hi {name}"), "row {i}: {st}");
            assert_eq!(st["metadata"], json!({"campaign": "autumn", "batch": id, "row": i}), "{st}");
            assert_eq!(st["priority"], 1, "batch rows render below interactive requests");
        }
        if s.status(g).await["finished_at_ms"].as_i64() > interactive["finished_at_ms"].as_i64() {
            after_interactive += 1;
        }
    }
    assert!(after_interactive >= 150, "only {after_interactive} rows rendered after the interactive request");

    // One row's video, and the colour its row asked for.
    let video = s.get(rows[120]["video_url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    let mp4 = dir.path().join("row120.mp4");
    std::fs::write(&mp4, video).unwrap();
    let probe = ffprobe(&mp4);
    assert_eq!(probe["streams"][0]["codec_name"], "h264", "{probe}");
    let secs: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((secs - 1.0).abs() < 0.15, "{secs}");
    let [r, g, b] = crate::common::mean_rgb(&mp4, 0.5, 0, 0, 20, 20);
    assert!(r > 150.0 && g < 90.0 && b < 90.0, "BRAND of row 120: {r} {g} {b}");

    // The CSV manifest: a header, a line per row, the row's values in the last columns.
    let csv = s.get(&format!("/api/v1/batches/{id}/manifest?format=csv")).send().await.unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 201);
    assert_eq!(lines[0], "row,status,generation_id,video_url,error_code,error_message,BRAND,NAME");
    assert!(lines[58].starts_with("57,invalid,,,merge_invalid,"), "{}", lines[58]);
    assert!(lines[1].starts_with("0,succeeded,gen_") && lines[1].ends_with(",Row 0"), "{}", lines[1]);

    // One webhook, when the batch ended, signed like every event.
    let got = hook.wait_for(1, LIMIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.deliveries().len(), 1, "one event per batch");
    let event: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(event["type"], "batch.finished");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["counts"]["succeeded"], 199);
    assert!(got[0].headers["reelsmith-signature"].to_str().unwrap().contains("v1="));
    // A finished batch cannot be cancelled.
    let r = s.post(&format!("/api/v1/batches/{id}/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_batch_cancelled_midway_stops_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("REELSMITH_BATCH_POLL_MS", "50"), ("REELSMITH_BATCH_CONCURRENCY", "2")]);
    let hook = Receiver::start(&[]).await;
    let (_, t) = json_of(
        s.post("/api/v1/templates").json(&json!({"name": "card", "template": card_template()})).send().await.unwrap(),
    )
    .await;
    let tpl = t["id"].as_str().unwrap();
    let mut csv = String::from("NAME,BRAND\n");
    for i in 0..60 {
        csv.push_str(&format!("\"Person, {i}\",{}\n", if i % 2 == 0 { "#ff0000" } else { "" }));
    }
    let form = reqwest::multipart::Form::new()
        .text("request", json!({"template": tpl, "webhook_url": hook.url}).to_string())
        .part("rows", reqwest::multipart::Part::text(csv).file_name("rows.csv").mime_str("text/csv").unwrap());
    let (code, b) = json_of(s.post("/api/v1/batches").multipart(form).send().await.unwrap()).await;
    assert_eq!(code, 202, "{b}");
    assert_eq!(b["template_id"], tpl);
    let id = b["id"].as_str().unwrap().to_string();
    // Let a few rows finish, then cancel.
    let t0 = Instant::now();
    loop {
        let (_, now) = json_of(s.get(&format!("/api/v1/batches/{id}?limit=1")).send().await.unwrap()).await;
        if now["counts"]["succeeded"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(t0.elapsed() < LIMIT, "{now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, c) = json_of(s.post(&format!("/api/v1/batches/{id}/cancel")).send().await.unwrap()).await;
    assert_eq!((code, c["status"].as_str()), (200, Some("cancelled")), "{c}");
    let end = wait_batch(&s, &id, "cancelled").await;
    let counts = &end["counts"];
    let (ok, cancelled) = (counts["succeeded"].as_u64().unwrap_or(0), counts["cancelled"].as_u64().unwrap_or(0));
    assert_eq!(ok + cancelled, 60, "{end}");
    assert!(ok >= 2 && cancelled >= 40, "{end}");
    // The values came from the CSV: a quoted comma, an empty cell taking the default.
    let (_, page) = json_of(s.get(&format!("/api/v1/batches/{id}?limit=2")).send().await.unwrap()).await;
    assert_eq!(page["rows"][0]["merge"], json!({"NAME": "Person, 0", "BRAND": "#ff0000"}), "{page}");
    assert_eq!(page["rows"][1]["merge"], json!({"NAME": "Person, 1"}), "{page}");
    assert_eq!(page["next_after"], 1);
    let got = hook.wait_for(1, LIMIT).await;
    let event: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!((event["type"].as_str(), event["data"]["status"].as_str()), (Some("batch.finished"), Some("cancelled")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.deliveries().len(), 1, "one event per batch");
    // No generation of the batch is left queued or running.
    let (_, gens) = json_of(s.get("/api/v1/generations?limit=200").send().await.unwrap()).await;
    assert!(
        gens["items"].as_array().unwrap().iter().all(|g| g["status"] != "queued" && g["status"] != "running"),
        "{gens}"
    );

    // Bad CSV and bad requests are named; nothing is stored.
    let form = |text: &str| {
        reqwest::multipart::Form::new()
            .text("request", json!({"template": tpl}).to_string())
            .part("rows", reqwest::multipart::Part::text(text.to_string()).file_name("rows.csv"))
    };
    let (code, e) = json_of(s.post("/api/v1/batches").multipart(form("NAME\nAda,extra\n")).send().await.unwrap()).await;
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("csv_invalid")), "{e}");
    let (code, e) = json_of(s.post("/api/v1/batches").multipart(form("NAME\n")).send().await.unwrap()).await;
    assert_eq!((code, e["error"]["issues"][0]["path"].as_str()), (422, Some("rows")), "{e}");
    let (code, e) = json_of(
        s.post("/api/v1/batches")
            .json(&json!({"template": tpl, "rows": [{"NAME": "x"}], "priority": 7}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((code, e["error"]["issues"][0]["path"].as_str()), (422, Some("priority")), "{e}");
    let (code, e) =
        json_of(s.post("/api/v1/batches").json(&json!({"template": "tpl_nope", "rows": [{}]})).send().await.unwrap())
            .await;
    assert_eq!(code, 404, "{e}");
    let (_, list) = json_of(s.get("/api/v1/batches").send().await.unwrap()).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_rows_are_accepted_in_one_request() {
    let dir = tempfile::tempdir().unwrap();
    // No render workers: the rows stay pending while the batch is inspected and cancelled.
    let s = Server::start(dir.path(), &[("REELSMITH_WORKERS", "false")]);
    let rows: Vec<Value> = (0..10_000).map(|i| json!({"NAME": format!("N{i}")})).collect();
    let (code, b) = json_of(
        s.post("/api/v1/batches").json(&json!({"template": card_template(), "rows": rows})).send().await.unwrap(),
    )
    .await;
    assert_eq!(code, 202, "{b}");
    assert_eq!((b["total"].as_u64(), b["counts"]["pending"].as_u64()), (Some(10_000), Some(10_000)), "{b}");
    let id = b["id"].as_str().unwrap();
    let (_, page) = json_of(s.get(&format!("/api/v1/batches/{id}?after=9997")).send().await.unwrap()).await;
    let last: Vec<u64> = page["rows"].as_array().unwrap().iter().map(|r| r["row"].as_u64().unwrap()).collect();
    assert_eq!(last, [9998, 9999], "{page}");
    let (code, c) = json_of(s.post(&format!("/api/v1/batches/{id}/cancel")).send().await.unwrap()).await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["counts"]["cancelled"], 10_000, "{c}");
    let csv = s.get(&format!("/api/v1/batches/{id}/manifest?format=csv")).send().await.unwrap().text().await.unwrap();
    assert_eq!(csv.lines().count(), 10_001);
    // One more row than the limit is refused whole.
    let rows: Vec<Value> = (0..10_001).map(|_| json!({})).collect();
    let (code, e) = json_of(
        s.post("/api/v1/batches").json(&json!({"template": card_template(), "rows": rows})).send().await.unwrap(),
    )
    .await;
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("too_many_rows")), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keys_batch_keeps_to_half_its_concurrency_and_its_own_requests_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["keys", "--data-dir"])
        .arg(dir.path())
        .args(["create", "team", "--rate", "1000", "--burst", "1000", "--max-jobs", "4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut s = Server::start(dir.path(), &[("REELSMITH_REQUIRE_API_KEY", "true"), ("REELSMITH_BATCH_POLL_MS", "20")]);
    s.token = Some(String::from_utf8(out.stdout).unwrap().trim().to_string());
    let rows: Vec<Value> = (0..24).map(|i| json!({"NAME": format!("K{i}")})).collect();
    let (code, b) = json_of(
        s.post("/api/v1/batches").json(&json!({"template": card_template(), "rows": rows})).send().await.unwrap(),
    )
    .await;
    assert_eq!(code, 202, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    // While it runs, the key never has more than 2 (half of 4) batch rows queued or running,
    // and its own request is accepted.
    let mut most = 0;
    let mut interactive = None;
    let t0 = Instant::now();
    loop {
        let (_, now) = json_of(s.get(&format!("/api/v1/batches/{id}?limit=1")).send().await.unwrap()).await;
        let busy = now["counts"]["queued"].as_u64().unwrap_or(0) + now["counts"]["running"].as_u64().unwrap_or(0);
        most = most.max(busy);
        if interactive.is_none() && now["counts"]["succeeded"].as_u64().unwrap_or(0) >= 1 {
            let (code, g) = s.submit(&json!({"spec": small_spec("Mine.")})).await;
            assert_eq!(code, 202, "the key's own request gets in while its batch runs: {g}");
            interactive = g["id"].as_str().map(str::to_string);
        }
        if now["status"] == "completed" {
            assert_eq!(now["counts"]["succeeded"], 24, "{now}");
            break;
        }
        assert!(t0.elapsed() < LIMIT, "{now}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!((1..=2).contains(&most), "at most half the key's 4 jobs: saw {most}");
    let done = s.wait_final(&interactive.expect("submitted"), LIMIT).await;
    assert_eq!(done["status"], "succeeded");
}
