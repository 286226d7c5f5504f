//! `POST /api/v1/generations {"template", "merge"}`: a template filled with a row (text, a
//! number as a scene's length, a colour, an uploaded picture by asset ref) renders like any
//! storyboard; a bad template or row is refused with 422 naming each field, and nothing is queued.

use serde_json::{Value, json};

use crate::harness::*;

const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

fn template() -> Value {
    crate::common::greeting_template()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_and_its_row_render_and_bad_rows_are_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let img = image::RgbImage::from_pixel(320, 180, image::Rgb([30, 200, 60]));
    let mut png = std::io::Cursor::new(vec![]);
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let r = s.post("/api/v1/assets").header("x-file-name", "green.png").body(png.into_inner()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let photo = format!("asset:{}", r.json::<Value>().await.unwrap()["id"].as_str().unwrap());

    // Shotstack's form; the number comes as text, as from a CSV cell.
    let merge = json!([{"find": "NAME", "replace": "Ada"}, {"find": "PHOTO", "replace": photo},
                       {"find": "SECONDS", "replace": "2.5"}, {"find": "BRAND", "replace": "#c03020"}]);
    let (code, body) = s.submit(&json!({"template": template(), "merge": merge})).await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let done = s.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["spec"]["scenes"][0]["duration"], 2.5, "{done}");
    assert_eq!(done["spec"]["scenes"][0]["title"], "Hello, Ada");
    assert_eq!(done["spec"]["scenes"][1]["image"], photo.as_str());
    let video = s.get(&format!("/api/v1/generations/{id}/video")).send().await.unwrap().bytes().await.unwrap();
    let mp4 = dir.path().join("ada.mp4");
    std::fs::write(&mp4, video).unwrap();
    let [r, g, b] = crate::common::mean_rgb(&mp4, 0.3, 0, 0, 40, 40);
    assert!(r > 150.0 && g < 90.0 && b < 90.0, "BRAND: {r} {g} {b}");
    let [r, g, b] = crate::common::mean_rgb(&mp4, 3.2, 100, 60, 220, 120);
    assert!(g > 150.0 && r < 90.0, "PHOTO: {r} {g} {b}");

    // Bad rows: every problem named, nothing queued.
    let before = s.get("/api/v1/generations").send().await.unwrap().json::<Value>().await.unwrap();
    let refused = |body: Value| {
        let s = &s;
        async move {
            let r = s.post("/api/v1/generations").json(&body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 422);
            r.json::<Value>().await.unwrap()["error"].clone()
        }
    };
    let err =
        refused(json!({"template": template(), "merge": {"NAME": "x".repeat(21), "SECONDS": "soon", "AGE": 3}})).await;
    assert_eq!(err["code"], "merge_invalid", "{err}");
    let paths: Vec<&str> = err["issues"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["merge.AGE", "merge.NAME", "merge.PHOTO", "merge.SECONDS"], "{err}");
    let mut bad = template();
    bad["scenes"][0]["title"] = json!("Hi {{ NICK }}");
    let err = refused(json!({"template": bad, "merge": {"PHOTO": photo}})).await;
    assert_eq!(err["code"], "template_invalid", "{err}");
    assert_eq!(err["issues"][0]["path"], "template.scenes[0].title", "{err}");
    assert_eq!(err["issues"][1]["path"], "template.fields.NAME", "unused now: {err}");
    let err = refused(json!({"template": template(), "merge": {"NAME": "A", "PHOTO": "asset:ast_nope"}})).await;
    assert!(err["issues"][0]["path"].as_str().unwrap().starts_with("spec.scenes[1].image"), "{err}");
    let err = refused(json!({"spec": template(), "template": template()})).await;
    assert_eq!(err["issues"][0]["path"], "template", "{err}");
    let err = refused(json!({"merge": {"NAME": "A"}, "spec": {"version": 1, "scenes": [{"duration": 1.0}]}})).await;
    assert_eq!(err["issues"][0]["path"], "merge", "{err}");
    let after = s.get("/api/v1/generations").send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(before, after, "nothing was queued");
}
