//! AFL++ target: the spec parser and validation, the service's first contact with a tenant's
//! JSON. Any panic is a crash; every input must parse or fail with a JSON path, and a parsed
//! spec must validate or fail with issues that each name a path.

fn main() {
    // Validation checks files relative to this folder: an empty one, so nothing outside is read.
    let base = std::env::temp_dir().join(format!("reelsmith-afl-spec-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("a scratch folder");
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else { return };
        match reelsmith_spec::parse(text) {
            Err(e) => assert!(!e.message.is_empty(), "a parse error says what is wrong"),
            Ok(spec) => {
                if let Err(v) = spec.validate(&base) {
                    assert!(!v.issues.is_empty(), "a refused spec names at least one issue");
                    for i in &v.issues {
                        assert!(!i.message.is_empty(), "every issue says what is wrong: {}", i.path);
                    }
                }
            }
        }
    });
}
