//! The service's parsers of hostile input on mutated inputs (see `reelsmith-fuzz`): the upload
//! sniffer, the multipart reader, the `POST /generations` envelope and the D-ID `POST /talks`
//! request. Never a panic, and every refusal is a 4xx.

use std::path::Path;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use reelsmith_server::assets::{self, Kind};
use reelsmith_server::submit;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    reelsmith_fuzz::seeds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(target))
}

#[test]
fn upload_sniffer() {
    reelsmith_fuzz::run("uploads", &seeds("uploads"), |bytes| {
        let Some((kind, media_type)) = assets::sniff(bytes) else { return };
        assert_eq!(assets::sniff_kind(media_type), Some(kind), "{media_type}");
        if kind == Kind::Image {
            // What an image upload reads before anything else: the header's dimensions.
            let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().unwrap();
            let _ = reader.into_dimensions();
        }
    });
}

#[test]
fn multipart_reader() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    reelsmith_fuzz::run("multipart", &seeds("multipart"), |bytes| {
        rt.block_on(async {
            let req = Request::builder()
                .method("POST")
                .header("content-type", "multipart/form-data; boundary=X")
                .body(Body::from(bytes.to_vec()))
                .unwrap();
            let Ok(mut mp) = Multipart::from_request(req, &()).await else { return };
            loop {
                match mp.next_field().await {
                    Ok(Some(field)) => {
                        let _ = (field.name().map(str::len), field.file_name().map(str::len));
                        if let Err(e) = field.bytes().await {
                            assert!(e.status().is_client_error(), "{e}");
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        assert!(e.status().is_client_error(), "{e}");
                        break;
                    }
                }
            }
        })
    });
}

#[test]
fn generation_envelope() {
    reelsmith_fuzz::run("envelope", &seeds("envelope"), |bytes| match submit::parse_envelope(bytes) {
        Ok(env) => {
            if let Some(u) = &env.webhook_url
                && let Err(e) = submit::check_webhook_url(u, false)
            {
                assert!(e.status.is_client_error(), "{}", e.message);
            }
        }
        Err(e) => assert!(e.status.is_client_error(), "{}", e.message),
    });
}

#[test]
fn talk_request() {
    reelsmith_fuzz::run("talks", &seeds("talks"), |bytes| {
        for did in [false, true] {
            if let Err(e) = reelsmith_server::http::talks::parse_talk_request(bytes, did) {
                assert!(e.0.status.is_client_error(), "{}", e.0.message);
            }
        }
    });
}
