//! What the benchmarks share: the encode-only reference (FFmpeg alone encoding the same frames
//! from RAM) and the `--fail-if` limits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use reelsmith_engine::report::{TreeMemory, TreePeak, cpu_seconds};

/// FFmpeg alone encoding the raw frames of `video` with the same settings: (wall s, cpu s, peak memory).
pub(crate) fn encode_only(video: &Path, w: u32, h: u32, fps: u32) -> Result<(f64, f64, TreePeak)> {
    // The frames are read from RAM, so the reference waits on no disk.
    let raw_dir = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let raw = raw_dir.join("reelsmith-bench-frames.yuv");
    reelsmith_media::ffmpeg::decode_to_raw(video, &raw)?;
    let out = raw_dir.join("reelsmith-bench-ref.mp4");
    let mem = TreeMemory::start();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let status = Command::new(reelsmith_media::ffmpeg::ffmpeg_bin())
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p"])
        .args(["-s", &format!("{w}x{h}"), "-framerate", &fps.to_string(), "-i"])
        .arg(&raw)
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-f", "mp4", "-y"])
        .arg(&out)
        .stdin(Stdio::null())
        .status()?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let peak = mem.finish();
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        bail!("reference encode failed: {status}");
    }
    Ok((wall, cpu, peak))
}

/// `FIGURE=LIMIT` pairs from `--fail-if`.
pub(crate) fn parse_limits(args: &[String]) -> Result<Vec<(String, f64)>> {
    args.iter()
        .map(|a| {
            let (k, v) = a.split_once('=').with_context(|| format!("--fail-if {a:?}: expected FIGURE=LIMIT"))?;
            let v: f64 = v.trim().parse().with_context(|| format!("--fail-if {a:?}: the limit is not a number"))?;
            Ok((k.trim().to_string(), v))
        })
        .collect()
}

/// Fails naming every figure above its limit (and any limit on a figure not measured).
pub(crate) fn check_limits(limits: &[(String, f64)], measured: &[(&str, Option<f64>)]) -> Result<()> {
    let mut over = vec![];
    for (name, limit) in limits {
        match measured.iter().find(|(n, _)| n == name) {
            None => bail!(
                "--fail-if {name}: no such figure; known: {}",
                measured.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
            Some((_, None)) => over.push(format!("{name} was not measured (limit {limit})")),
            Some((_, Some(v))) if v > limit => over.push(format!("{name} = {v:.3} > {limit}")),
            Some(_) => {}
        }
    }
    if over.is_empty() {
        if !limits.is_empty() {
            println!("  every figure within its --fail-if limit ({})", limits.len());
        }
        Ok(())
    } else {
        bail!("over the limit: {}", over.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_if_limits_name_every_figure_over_its_limit() {
        let limits = parse_limits(&["cold_vs_reference=1.5".into(), "peak_rss_mb = 400".into()]).unwrap();
        let measured = [("cold_vs_reference", Some(1.2)), ("peak_rss_mb", Some(455.0)), ("first_piece_s", None)];
        let err = check_limits(&limits, &measured).unwrap_err().to_string();
        assert!(err.contains("peak_rss_mb = 455.000 > 400") && !err.contains("cold_vs"), "{err}");
        assert!(check_limits(&limits[..1], &measured).is_ok());
        let unmeasured = parse_limits(&["first_piece_s=2".into()]).unwrap();
        assert!(check_limits(&unmeasured, &measured).unwrap_err().to_string().contains("not measured"));
        assert!(check_limits(&parse_limits(&["speed=1".into()]).unwrap(), &measured).is_err());
        assert!(parse_limits(&["cold_vs_reference".into()]).is_err());
        assert!(parse_limits(&["cold_vs_reference=fast".into()]).is_err());
    }
}
