//! `reelsmith render template.json --merge NAME=… --merge-file row.json`: a template's fields
//! merged into real renders (text, a number as the scene's length, a colour as its background,
//! an image), and every bad row refused by field before any work, with exit code 2.

mod common;

use std::process::Command;

use common::{Fixture, greeting_template, mean_rgb, reelsmith};
use serde_json::json;

fn template(f: &Fixture) -> std::path::PathBuf {
    f.write_spec("template.json", &greeting_template())
}

fn duration(p: &std::path::Path) -> f64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_template_renders_each_row_with_its_fields_merged() {
    let f = Fixture::new();
    let t = template(&f);
    f.solid_png("green.png", 320, 180, [30, 200, 60]);
    let row = f.write_spec(
        "row.json",
        &json!([{"find": "BRAND", "replace": "#c03020"}, {"find": "PHOTO", "replace": "green.png"}]),
    );
    let out = f.path("ada.mp4");
    let args = [
        "render",
        t.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--quiet",
        "--merge-file",
        row.to_str().unwrap(),
        "--merge",
        "NAME=Ada",
        "--merge",
        "SECONDS=2.5",
    ];
    let (code, err) = reelsmith(&f, &args);
    assert_eq!(code, 0, "{err}");
    // The number is the first scene's length, the colour its background, the image the second.
    assert!((duration(&out) - 3.5).abs() < 0.15, "{}", duration(&out));
    let [r, g, b] = mean_rgb(&out, 0.3, 0, 0, 40, 40);
    assert!(r > 150.0 && g < 90.0 && b < 90.0, "BRAND merged: {r} {g} {b}");
    let [r, g, b] = mean_rgb(&out, 3.2, 100, 60, 220, 120);
    assert!(g > 150.0 && r < 90.0 && b < 120.0, "PHOTO merged: {r} {g} {b}");
    // The defaults fill what the row leaves out.
    let out2 = f.path("bo.mp4");
    let (code, err) = reelsmith(
        &f,
        &[
            "render",
            t.to_str().unwrap(),
            "-o",
            out2.to_str().unwrap(),
            "--quiet",
            "--merge",
            "NAME=Bo",
            "--merge",
            "PHOTO=green.png",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!((duration(&out2) - 2.5).abs() < 0.15);
    let [r, g, b] = mean_rgb(&out2, 0.3, 0, 0, 40, 40);
    assert!(b > 150.0 && r < 90.0, "the default BRAND: {r} {g} {b}");
}

#[test]
fn bad_rows_and_templates_are_refused_by_field_before_any_work() {
    let f = Fixture::new();
    let t = template(&f);
    let out = f.path("out.mp4");
    let render = |extra: &[&str]| {
        let mut args = vec!["render", t.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quiet"];
        args.extend_from_slice(extra);
        let (code, err) = reelsmith(&f, &args);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(code, 2, "{err}");
        assert!(!out.exists());
        err
    };
    let err = render(&["--merge", "NAME=Ada"]);
    assert!(err.contains("merge.PHOTO: missing (the field has no default)"), "{err}");
    let err = render(&["--merge", &format!("NAME={}", "x".repeat(21)), "--merge", "PHOTO=p.png"]);
    assert!(err.contains("merge.NAME: is 21 characters; at most 20"), "{err}");
    let err = render(&["--merge", "NAME=A", "--merge", "PHOTO=p.png", "--merge", "SECONDS=soon", "--merge", "AGE=3"]);
    assert!(err.contains("merge.SECONDS: must be a number") && err.contains("merge.AGE: not a field"), "{err}");
    let err = render(&["--merge", "NAME"]);
    assert!(err.contains("write NAME=VALUE"), "{err}");
    // A merged value the spec then refuses is named by its spec path.
    let err = render(&["--merge", "NAME=A", "--merge", "PHOTO=missing.png"]);
    assert!(err.contains("scenes[1].image: file not found: missing.png"), "{err}");
    // A template whose placeholders and fields disagree.
    let bad = f.write_spec(
        "bad.json",
        &json!({"fields": {"X": {"type": "string"}}, "version": 1, "scenes": [{"title": "{{ Y }}"}]}),
    );
    let (code, err) = reelsmith(&f, &["render", bad.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scenes[0].title: {{ Y }} is not a declared field")
            && err.contains("fields.X: declared but never used"),
        "{err}"
    );
    // `validate` checks a template at its defaults, leaving out the files only rows name, and
    // names what is wrong with it.
    let (code, err) = reelsmith(&f, &["validate", t.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_reelsmith")).args(["validate", bad.to_str().unwrap()]).output().unwrap();
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(said.contains("{{ Y }} is not a declared field"), "{said}");
    let mut wrong = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&t).unwrap()).unwrap();
    wrong["fields"]["SECONDS"]["default"] = json!(9000);
    let wrong = f.write_spec("wrong.json", &wrong);
    let o = Command::new(env!("CARGO_BIN_EXE_reelsmith")).args(["validate", wrong.to_str().unwrap()]).output().unwrap();
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(said.contains("scenes[0].duration"), "a default the spec refuses is named by its spec path: {said}");
    // --merge on a plain spec.
    let plain = f.write_spec("plain.json", &json!({"version": 1, "scenes": [{"duration": 1.0}]}));
    let (code, err) =
        reelsmith(&f, &["render", plain.to_str().unwrap(), "-o", out.to_str().unwrap(), "--merge", "A=b"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("declares no fields"), "{err}");
}
