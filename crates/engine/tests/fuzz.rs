//! The spec parser, validation and the cost estimate on mutated specs (see `reelsmith-fuzz`):
//! never a panic; a spec that validates serialises and parses back to itself; the estimate is
//! always a finite, non-negative length.

use std::path::Path;

#[test]
fn spec_parser_validation_and_cost_estimate() {
    let seeds = reelsmith_fuzz::seeds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/spec"));
    let base = tempfile::tempdir().unwrap();
    reelsmith_fuzz::run("spec", &seeds, |bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        let Ok(spec) = reelsmith_spec::parse(text) else { return };
        let json = serde_json::to_string(&spec).expect("a parsed spec serialises");
        let again = reelsmith_spec::parse(&json);
        if spec.validate(base.path()).is_ok() {
            assert_eq!(again.expect("a valid spec parses back"), spec);
        }
        let cost = reelsmith_engine::cost::estimate(&spec, |_| Some(2.0), |_| Some(2.0));
        assert!(cost.seconds.is_finite() && cost.seconds >= 0.0, "{cost:?}");
        assert!(cost.megapixel_frames.is_finite() && cost.canvas_megapixels.is_finite(), "{cost:?}");
    });
}
