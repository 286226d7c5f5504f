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
