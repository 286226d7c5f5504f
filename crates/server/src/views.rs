//! Public JSON views of generations and talks: HTTP responses and webhook bodies alike.

use reelsmith_store::{Attempt, GenerationRecord, JobState, now_ms};
use serde_json::{Value, json};

use crate::signing::Purpose;
use crate::state::AppState;

/// The public JSON of a generation. `attempts` may be empty (webhook bodies leave them out).
pub fn status_json(g: &GenerationRecord, attempts: &[Attempt]) -> Value {
    let base = format!("/api/v1/generations/{}", g.id);
    let progress = if g.state == JobState::Succeeded { 1.0 } else { g.progress };
    let mut v = json!({
        "id": g.id,
        "status": g.state.as_str(),
        "progress": (progress * 1000.0).round() / 10.0,
        "stage": g.stage,
        "priority": g.priority,
        "attempts": g.attempts,
        "max_attempts": g.max_attempts,
        "created_at_ms": g.created_at_ms,
        "started_at_ms": g.started_at_ms,
        "finished_at_ms": g.finished_at_ms,
        "metadata": g.metadata,
        "webhook_url": g.webhook_url,
        "links": {"self": base, "events": format!("{base}/events"), "cancel": format!("{base}/cancel")},
    });
    // Made from a prompt: the request, the plan, each scene's picture source, the cost ledger.
    if let Some(p) = &g.prompt {
        v["prompt"] = p.clone();
    }
    if g.state == JobState::Failed {
        v["error"] = json!({
            "code": g.error_code.as_deref().unwrap_or("failed"),
            "message": g.error_message.clone().or_else(|| g.last_error.clone()).unwrap_or_else(|| "the render failed".into()),
        });
    } else if let Some(e) = &g.last_error {
        v["last_error"] = json!(e);
    }
    if let Some(r) = &g.result {
        v["result"] = json!({
            "video_url": format!("{base}/video"),
            "thumbnail_url": format!("{base}/thumbnail"),
            "subtitles_url": r.has_subtitles.then(|| format!("{base}/subtitles.vtt")),
            "report_url": format!("{base}/report"),
            "bytes": r.video_bytes,
            "duration_s": r.duration_s,
            "width": r.width,
            "height": r.height,
        });
        if let Some(stages) = r.report.get("stages") {
            v["timings"] = json!({
                "wall_s": r.report.get("wall_s"),
                "cpu_s": r.report.get("cpu_s"),
                "cache_hit_ratio": r.report.get("cache_hit_ratio"),
                "stages": stages,
            });
        }
    }
    if !attempts.is_empty() {
        v["attempt_history"] = json!(attempts);
    }
    v
}

pub const TALK_PREFIX: &str = "tlk_";

pub fn talk_id(generation_id: &str) -> String {
    format!("{TALK_PREFIX}{}", generation_id.trim_start_matches("gen_"))
}

pub fn is_talk(g: &GenerationRecord) -> bool {
    g.metadata.get("talk").is_some_and(Value::is_object)
}

/// ISO 8601 UTC with milliseconds, as D-ID writes times.
pub fn iso(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub(crate) fn result_message(generation_id: &str, expires: i64) -> Vec<u8> {
    format!("talk-result:{generation_id}:{expires}").into_bytes()
}

fn sign_result(state: &AppState, generation_id: &str, expires: i64) -> String {
    state.signing.sign(Purpose::TalkResult, &result_message(generation_id, expires))
}

/// A link to the talk's video that works without a key until it expires.
fn result_url(state: &AppState, g: &GenerationRecord, base: &str) -> String {
    let expires = now_ms() / 1000 + state.config.result_url_ttl_secs as i64;
    let sig = sign_result(state, &g.id, expires);
    format!("{}/talks/{}/result.mp4?expires={expires}&signature={sig}", base.trim_end_matches('/'), talk_id(&g.id))
}

/// The talk as `GET /talks/{id}` shows it (and as its webhook sends it).
pub fn talk_json(state: &AppState, g: &GenerationRecord, base: &str) -> Value {
    let t = &g.metadata["talk"];
    let status = match g.state {
        JobState::Queued => "created",
        JobState::Running => "started",
        JobState::Succeeded => "done",
        JobState::Failed | JobState::Cancelled => "error",
    };
    let modified = g.finished_at_ms.or(g.started_at_ms).unwrap_or(g.created_at_ms);
    let mut v = json!({
        "id": talk_id(&g.id),
        "object": "talk",
        "user_id": g.api_key_id.as_deref().unwrap_or("local"),
        "created_by": g.api_key_id.as_deref().unwrap_or("local"),
        "created_at": iso(g.created_at_ms),
        "modified_at": iso(modified),
        "status": status,
        "source_url": t["source_url"],
        "config": t["config"],
        "script": t["script"],
        "engine": t["engine"],
    });
    let obj = v.as_object_mut().expect("object");
    for key in ["name", "user_data", "audio_url", "remote_id"] {
        if let Some(x) = t.get(key).filter(|x| !x.is_null()) {
            obj.insert(key.into(), x.clone());
        }
    }
    if let Some(s) = g.started_at_ms {
        obj.insert("started_at".into(), json!(iso(s)));
    }
    if let Some(w) = &g.webhook_url {
        obj.insert("webhook".into(), json!(w));
    }
    if let (JobState::Succeeded, Some(r)) = (g.state, &g.result) {
        obj.insert("duration".into(), json!(r.duration_s));
        obj.insert("result_url".into(), json!(result_url(state, g, base)));
    }
    match g.state {
        JobState::Failed => {
            let description = g.error_message.clone().or_else(|| g.last_error.clone()).unwrap_or_default();
            obj.insert("error".into(), json!({"kind": "TalkError", "description": description}));
        }
        JobState::Cancelled => {
            obj.insert("error".into(), json!({"kind": "Cancelled", "description": "the talk was cancelled"}));
        }
        _ => {}
    }
    v
}

/// The folders whose paths callers must not see: the data and cache folders, as configured
/// (maybe relative) and absolute (as the engine writes them), and the temporary folder.
pub fn server_folders(data: &std::path::Path, cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.into());
    vec![absolute(data), absolute(cache), data.into(), cache.into(), std::env::temp_dir()]
}

/// `message` with every path under one of `roots` (the data and cache folders) cut to its file
/// name: callers learn what failed, not where this node keeps its files (the log keeps it all).
pub fn without_server_paths(message: &str, roots: &[impl AsRef<std::path::Path>]) -> String {
    let mut text = message.to_string();
    for root in roots {
        let root = root.as_ref().to_string_lossy();
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            continue;
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find(root) {
            let after = &rest[at + root.len()..];
            let end = after.find(ends_a_path).unwrap_or(after.len());
            // Only the folder itself or a path inside it (not `/data2` for `/data`).
            if !(end == 0 || after.starts_with('/')) || !starts_a_path(&rest[..at]) {
                out.push_str(&rest[..at + root.len()]);
                rest = after;
                continue;
            }
            let path = format!("{root}{}", &after[..end]);
            out.push_str(&rest[..at]);
            out.push_str(path.trim_end_matches('/').rsplit('/').next().unwrap_or_default());
            rest = &after[end..];
        }
        out.push_str(rest);
        text = out;
    }
    text
}

fn ends_a_path(c: char) -> bool {
    c.is_whitespace() || "'\"`,;:()[]{}<>".contains(c)
}

/// Whether a path may begin right after `before` (not in the middle of a word or a longer path).
fn starts_a_path(before: &str) -> bool {
    before.chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || "/._-".contains(c)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{server_folders, without_server_paths};

    #[test]
    fn server_paths_become_file_names() {
        let roots = [Path::new("/srv/reelsmith/data/"), Path::new("/var/cache/rs")];
        let cut = |m: &str| without_server_paths(m, &roots);
        assert_eq!(
            cut("canvas: image: corrupt or unreadable image /srv/reelsmith/data/assets/ab/cd1234.png: bad huffman"),
            "canvas: image: corrupt or unreadable image cd1234.png: bad huffman"
        );
        assert_eq!(cut("cannot open '/var/cache/rs/segments/k/seg.mp4' (x)"), "cannot open 'seg.mp4' (x)");
        assert_eq!(cut("in /srv/reelsmith/data and /srv/reelsmith/data/"), "in data and data");
        // Other paths, and look-alikes of the roots, stay.
        for kept in ["/srv/reelsmith/data2/x.png", "/home/me/a.png", "see x/srv/reelsmith/data/a", "no path"] {
            assert_eq!(cut(kept), kept);
        }
        assert_eq!(cut("two: /var/cache/rs/a/b.wav, /srv/reelsmith/data/c.png"), "two: b.wav, c.png");
    }

    #[test]
    fn a_relative_data_folder_is_cut_where_it_appears_absolute() {
        let data = Path::new("reelsmith-data");
        let folders = server_folders(data, &data.join("cache"));
        let cwd = std::env::current_dir().unwrap();
        let message = format!("cannot read {}/reelsmith-data/cache/ab/frame.png: gone", cwd.display());
        assert_eq!(without_server_paths(&message, &folders), "cannot read frame.png: gone");
        assert_eq!(without_server_paths("in reelsmith-data/assets/x.png", &folders), "in x.png");
    }
}
