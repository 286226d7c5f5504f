//! BlazeFace on a real portrait (NASA, public domain; see fixtures/README.md).

use reelsmith_models::face::{FaceDetector, FaceError, choose};

fn astronaut() -> (u32, u32, Vec<u8>) {
    let img = image::open(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.jpg")).unwrap().to_rgb8();
    (img.width(), img.height(), img.into_raw())
}

#[test]
fn finds_the_astronauts_face_and_mouth() {
    let det = FaceDetector::discover().expect("models installed by scripts/models.sh");
    let (w, h, rgb) = astronaut();
    let faces = det.detect(w, h, &rgb).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    let f = &faces[0];
    assert!(f.score > 0.8, "{}", f.score);
    let [x, y, bw, bh] = f.bbox;
    let [mx, my] = f.mouth();
    let [nx, ny] = f.keypoints[2];
    let ([rx, ry], [lx, ly]) = (f.keypoints[0], f.keypoints[1]);
    eprintln!(
        "box {x:.0},{y:.0} {bw:.0}x{bh:.0} mouth {mx:.0},{my:.0} nose {nx:.0},{ny:.0} eyes {rx:.0},{ry:.0} {lx:.0},{ly:.0}"
    );
    // Where they are (checked by eye on the picture, drawn with ffmpeg drawbox), within 8 px.
    let near = |p: [f32; 2], q: [f32; 2]| (p[0] - q[0]).abs() <= 8.0 && (p[1] - q[1]).abs() <= 8.0;
    assert!(near([mx, my], [219.0, 146.0]), "mouth at {mx},{my}");
    assert!(near([nx, ny], [222.0, 125.0]), "nose at {nx},{ny}");
    assert!(near([rx, ry], [204.0, 101.0]) && near([lx, ly], [248.0, 108.0]), "eyes");
    assert!(near([x, y], [178.0, 81.0]) && (bw - 94.0).abs() < 10.0 && (bh - 94.0).abs() < 10.0, "box");
    // Geometry of a face: eyes above the nose above the mouth, inside the box.
    assert!(ry < ny && ly < ny && ny < my, "eyes, nose, mouth top to bottom");
    assert!(rx < lx, "the subject's right eye is on the image's left");
    for [px, py] in [f.mouth(), f.keypoints[2], f.keypoints[0], f.keypoints[1]] {
        assert!(px > x && px < x + bw && py > y && py < y + bh, "keypoint inside the box");
    }
}

#[test]
fn no_face_in_a_plain_picture_or_a_landscape_letterbox() {
    let det = FaceDetector::discover().expect("models installed by scripts/models.sh");
    let (w, h) = (400u32, 240u32);
    let rgb: Vec<u8> = (0..w * h).flat_map(|i| [(i % w) as u8, 90, 160]).collect();
    let faces = det.detect(w, h, &rgb).unwrap();
    assert!(faces.is_empty(), "{faces:?}");
    assert_eq!(choose(&faces, None), Err(FaceError::NoFace));
    assert!(det.detect(10, 10, &[0; 5]).is_err(), "a wrong buffer size is an error, not a panic");
}

#[test]
fn mesh_lips_and_chin_land_on_the_astronauts_mouth() {
    use reelsmith_models::face::{FaceMesh, mesh};
    let det = FaceDetector::discover().unwrap();
    let m = FaceMesh::discover().expect("models installed by scripts/models.sh");
    let (w, h, rgb) = astronaut();
    let face = choose(&det.detect(w, h, &rgb).unwrap(), None).unwrap();
    let lm = m.landmarks(w, h, &rgb, &face).unwrap();
    assert_eq!(lm.points.len(), 468);
    assert!(lm.score > 0.9, "face score {}", lm.score);
    let p = |i: usize| [lm.points[i][0], lm.points[i][1]];
    let [mx, my] = face.mouth();
    let inner = [
        (p(mesh::UPPER_LIP_INNER)[0] + p(mesh::LOWER_LIP_INNER)[0]) / 2.0,
        (p(mesh::UPPER_LIP_INNER)[1] + p(mesh::LOWER_LIP_INNER)[1]) / 2.0,
    ];
    eprintln!(
        "inner lips {inner:?} mouth kp {mx},{my} corners {:?} {:?} chin {:?}",
        p(mesh::MOUTH_RIGHT),
        p(mesh::MOUTH_LEFT),
        p(mesh::CHIN)
    );
    assert!((inner[0] - mx).abs() < 10.0 && (inner[1] - my).abs() < 10.0, "lips centre at the mouth");
    assert!(p(mesh::UPPER_LIP_TOP)[1] < p(mesh::LOWER_LIP_BOTTOM)[1], "upper lip above lower lip");
    assert!(p(mesh::MOUTH_RIGHT)[0] < mx && p(mesh::MOUTH_LEFT)[0] > mx, "corners either side");
    let width = p(mesh::MOUTH_LEFT)[0] - p(mesh::MOUTH_RIGHT)[0];
    assert!((25.0..60.0).contains(&width), "mouth width {width}");
    assert!(
        p(mesh::CHIN)[1] > my + 15.0 && p(mesh::CHIN)[1] < face.bbox[1] + face.bbox[3] + 25.0,
        "chin below the mouth"
    );
    // She smiles with her teeth showing: the inner lips are apart.
    assert!(p(mesh::LOWER_LIP_INNER)[1] - p(mesh::UPPER_LIP_INNER)[1] > 2.0);
}

/// Wraps JPEG bytes with an EXIF APP1 segment carrying `orientation` (a camera that stored the
/// picture sideways).
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec(); // big-endian TIFF, first IFD at 8
    tiff.extend(1u16.to_be_bytes()); // one entry
    tiff.extend(0x0112u16.to_be_bytes()); // Orientation
    tiff.extend(3u16.to_be_bytes()); // SHORT
    tiff.extend(1u32.to_be_bytes()); // count
    tiff.extend(orientation.to_be_bytes());
    tiff.extend([0, 0]);
    tiff.extend(0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

#[test]
fn a_sideways_photo_with_exif_orientation_finds_the_same_face() {
    use reelsmith_models::face::load_photo;
    let dir = tempfile::tempdir().unwrap();
    // Store the portrait turned 90° counter-clockwise, tagged "rotate 90° clockwise to view".
    let stored = dir.path().join("stored.jpg");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/astronaut.jpg")])
        .args(["-vf", "transpose=2", "-q:v", "2"])
        .arg(&stored)
        .status()
        .unwrap();
    assert!(ok.success());
    let tagged = dir.path().join("tagged.jpg");
    std::fs::write(&tagged, with_exif_orientation(&std::fs::read(&stored).unwrap(), 6)).unwrap();
    let det = FaceDetector::discover().unwrap();
    let (w, h, rgb) = load_photo(&tagged).unwrap();
    assert_eq!((w, h), (512, 512));
    let face = choose(&det.detect(w, h, &rgb).unwrap(), None).unwrap();
    let [mx, my] = face.mouth();
    assert!((mx - 219.0).abs() < 10.0 && (my - 146.0).abs() < 10.0, "upright again: mouth at {mx},{my}");
    // Without the tag the face lies on its side: its eyes are one above the other.
    let (w, h, rgb) = load_photo(&stored).unwrap();
    if let Ok(f) = choose(&det.detect(w, h, &rgb).unwrap(), None) {
        let ([rx, ry], [lx, ly]) = (f.keypoints[0], f.keypoints[1]);
        assert!((ry - ly).abs() > (rx - lx).abs(), "sideways face: {f:?}");
    }
    // A corrupt photo is an error naming the file, not a panic.
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"\xFF\xD8\xFF\xE0 not really a jpeg").unwrap();
    assert!(load_photo(&bad).unwrap_err().to_string().contains("bad.jpg"));
}

/// The person mask covers the astronaut (face, hair, suit) and not the studio backdrop.
#[test]
fn person_mask_covers_the_astronaut_not_the_backdrop() {
    let (w, h, rgb) = astronaut();
    let seg = reelsmith_models::PersonSegmenter::discover().unwrap();
    let m = seg.mask(w, h, &rgb).unwrap();
    assert_eq!((m.width, m.height, m.alpha.len()), (w, h, (w * h) as usize));
    let mean = |x0: u32, y0: u32, x1: u32, y1: u32| {
        let mut s = 0u64;
        for y in y0..y1 {
            for x in x0..x1 {
                s += m.alpha[(y * w + x) as usize] as u64;
            }
        }
        s as f64 / ((x1 - x0) * (y1 - y0)) as f64
    };
    // Face around (220, 140), suit at the bottom middle; backdrop in the top corners.
    assert!(mean(200, 110, 240, 170) > 230.0, "face: {}", mean(200, 110, 240, 170));
    assert!(mean(200, 400, 300, 480) > 200.0, "suit: {}", mean(200, 400, 300, 480));
    assert!(mean(0, 0, 60, 60) < 25.0, "top-left backdrop: {}", mean(0, 0, 60, 60));
    assert!(mean(452, 0, 512, 60) < 25.0, "top-right backdrop: {}", mean(452, 0, 512, 60));
    // Soft edges: some pixels in between.
    let soft = m.alpha.iter().filter(|&&a| a > 20 && a < 235).count();
    assert!(soft > 200, "{soft} edge pixels");
    assert!(seg.mask(0, 0, &[]).is_err());
}
