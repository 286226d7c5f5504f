//! A small mutation fuzzer for the parsers that read hostile input (specs, uploads, multipart
//! bodies, D-ID requests), run as ordinary tests.
//!
//! It is not coverage-guided: the pinned stable toolchain cannot build libFuzzer's
//! instrumentation (`cargo fuzz` needs nightly). Instead it starts from committed seeds (real
//! inputs, and every input that ever crashed a target), mutates them with byte-level and
//! JSON-aware operators, and runs the target on each for a time budget: 2 s by default,
//! `REELSMITH_FUZZ_SECONDS` to change (`scripts/test.sh` runs 60 s per target). A panic prints
//! the seed of the run and saves the input under `target/fuzz-crashes/`; add it to the seeds
//! folder and it is a regression test from then on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Every file in `dir` (the committed seeds of one target).
pub fn seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("fuzz seeds {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The time budget of one target.
pub fn budget() -> Duration {
    let s = std::env::var("REELSMITH_FUZZ_SECONDS").ok().and_then(|v| v.parse::<f64>().ok()).unwrap_or(2.0);
    Duration::from_secs_f64(s.max(0.0))
}

/// Runs `target` on every seed, then on mutations of them until the budget ([`budget`]) is
/// spent; returns the number of inputs tried. Panics (naming the saved input) when the target
/// panics.
pub fn run(name: &str, seeds: &[Vec<u8>], target: impl Fn(&[u8])) -> u64 {
    run_for(name, seeds, budget(), target)
}

/// [`run`] with an explicit budget.
pub fn run_for(name: &str, seeds: &[Vec<u8>], limit: Duration, target: impl Fn(&[u8])) -> u64 {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let seed = std::env::var("REELSMITH_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let check = |input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{seed}-{}", input.len()));
            let _ = std::fs::write(&file, input);
            panic!("fuzz target {name} panicked (REELSMITH_FUZZ_SEED={seed}); the input is in {}", file.display());
        }
    };
    for s in seeds {
        check(s);
    }
    let started = Instant::now();
    let mut tried = seeds.len() as u64;
    while started.elapsed() < limit {
        let base = &seeds[rng.random_range(0..seeds.len())];
        // Half the time the seed's JSON tree is mutated (the parser then always gets past the
        // syntax and into the types and checks); otherwise its bytes.
        let tree = (rng.random::<bool>()).then(|| serde_json::from_slice::<Value>(base).ok()).flatten();
        let (mut input, byte_mutations) = match tree {
            Some(mut v) => {
                for _ in 0..rng.random_range(1..=3) {
                    mutate_json(&mut v, &mut rng);
                }
                // Now and then a byte-level change on top (a string's escapes, a truncation).
                (serde_json::to_vec(&v).expect("a JSON value serialises"), usize::from(rng.random_range(0..4) == 0))
            }
            None => (base.clone(), rng.random_range(1..=4)),
        };
        for _ in 0..byte_mutations {
            mutate(&mut input, seeds, &mut rng);
        }
        check(&input);
        tried += 1;
    }
    eprintln!("fuzz {name}: {tried} inputs in {:.1} s (REELSMITH_FUZZ_SEED={seed})", started.elapsed().as_secs_f64());
    tried
}

const INTERESTING_BYTES: &[u8] =
    &[0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', b'-', b'\n'];
const INTERESTING_TOKENS: &[&str] = &[
    "0",
    "-1",
    "1e309",
    "-1e309",
    "4294967296",
    "18446744073709551616",
    "0.0000001",
    "NaN",
    "null",
    "true",
    "\"\"",
    "[]",
    "{}",
    "\"asset:\"",
    "\"../../etc/passwd\"",
    "\"http:127.0.0.1:9\"",
    "\"-i\"",
    "9999999",
];

/// Values that find edges: extremes, wrong types, empty and huge strings, paths and URLs.
fn interesting_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..16) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1e300),
        3 => json!(-1e-300),
        4 => json!(u32::MAX),
        5 => json!(i64::MIN),
        6 => json!(0.5),
        7 => json!(""),
        8 => json!("x".repeat(rng.random_range(1000..20_000))),
        9 => json!("asset:ast_00000000000000000000000000000000"),
        10 => json!("../../../../etc/passwd"),
        11 => json!("\u{0}\u{1b}[31m😀\u{202e}"),
        12 => json!(true),
        13 => Value::Null,
        14 => json!([]),
        _ => json!({}),
    }
}

/// A random node of a JSON tree (each level: stop here a third of the time).
fn pick<'a>(v: &'a mut Value, rng: &mut StdRng) -> &'a mut Value {
    let n = match &*v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if n == 0 || rng.random_range(0..3) == 0 {
        return v;
    }
    let i = rng.random_range(0..n);
    match v {
        Value::Object(m) => pick(m.values_mut().nth(i).expect("in range"), rng),
        Value::Array(a) => pick(&mut a[i], rng),
        _ => unreachable!("only containers have children"),
    }
}

/// Changes one node of a JSON tree: a new value, a number scaled, an element repeated, a key
/// dropped or added.
fn mutate_json(v: &mut Value, rng: &mut StdRng) {
    let node = pick(v, rng);
    match (rng.random_range(0..5), &mut *node) {
        (0, Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(0.0) * [0.0, -1.0, 10.0, 1000.0, 1e6][rng.random_range(0..5)];
            *node = json!(x);
        }
        (1, Value::Array(a)) if !a.is_empty() => {
            let item = a[rng.random_range(0..a.len())].clone();
            let n = rng.random_range(1..=300);
            a.extend(std::iter::repeat_n(item, n));
        }
        (2, Value::Object(m)) if !m.is_empty() => {
            let k = m.keys().nth(rng.random_range(0..m.len())).expect("in range").clone();
            m.remove(&k);
        }
        (3, Value::Object(m)) => {
            let keys = ["type", "file", "duration", "text", "size", "width", "height", "zoom_to", "color", "padding"];
            m.insert(keys[rng.random_range(0..keys.len())].into(), interesting_value(rng));
        }
        _ => *node = interesting_value(rng),
    }
}

fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut StdRng) {
    let len = input.len();
    match rng.random_range(0..9) {
        // Flip a bit.
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] ^= 1 << rng.random_range(0..8);
        }
        // An interesting byte.
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = INTERESTING_BYTES[rng.random_range(0..INTERESTING_BYTES.len())];
        }
        // Insert random bytes.
        2 => {
            let i = rng.random_range(0..=len);
            let n = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            input.splice(i..i, bytes);
        }
        // Delete a range.
        3 if len > 0 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(64));
            input.drain(i..i + n);
        }
        // Repeat a range (long strings, deep nesting).
        4 if len > 0 => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - i).min(32));
            let piece = input[i..i + n].to_vec();
            let times = rng.random_range(2..=64);
            let at = rng.random_range(0..=len);
            input.splice(at..at, piece.iter().copied().cycle().take(n * times));
        }
        // Splice in part of another seed.
        5 => {
            let other = &seeds[rng.random_range(0..seeds.len())];
            if !other.is_empty() {
                let i = rng.random_range(0..other.len());
                let n = rng.random_range(1..=(other.len() - i).min(256));
                let at = rng.random_range(0..=len);
                input.splice(at..at, other[i..i + n].iter().copied());
            }
        }
        // Replace a JSON number or string with an interesting token.
        6 | 7 => {
            let starts: Vec<usize> = (0..len)
                .filter(|&i| {
                    input[i] == b'"' || input[i].is_ascii_digit() && (i == 0 || !input[i - 1].is_ascii_digit())
                })
                .collect();
            if let Some(&i) = starts.get(rng.random_range(0..starts.len().max(1))) {
                let end = if input[i] == b'"' {
                    (i + 1..len).find(|&j| input[j] == b'"').map_or(len, |j| j + 1)
                } else {
                    (i..len).find(|&j| !(input[j].is_ascii_digit() || input[j] == b'.')).unwrap_or(len)
                };
                let tok = INTERESTING_TOKENS[rng.random_range(0..INTERESTING_TOKENS.len())];
                input.splice(i..end, tok.bytes());
            }
        }
        // Truncate.
        _ if len > 0 => input.truncate(rng.random_range(0..len)),
        _ => input.push(rng.random()),
    }
    // Inputs stay small enough to try many.
    input.truncate(1 << 16);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_target_is_reported_with_its_input() {
        let seeds = vec![b"{\"a\": 1}".to_vec()];
        let r = catch_unwind(|| {
            run_for("selftest", &seeds, Duration::from_secs(1), |b| assert!(!b.contains(&b'}'), "found it"))
        });
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("fuzz target selftest panicked") && msg.contains("fuzz-crashes"), "{msg}");
    }

    #[test]
    fn mutations_reach_new_inputs() {
        let seeds = vec![b"{\"scenes\": [{\"duration\": 3}]}".to_vec()];
        let seen = std::sync::Mutex::new((std::collections::HashSet::new(), 0usize));
        let tried = run_for("selftest-mutations", &seeds, Duration::from_secs(1), |b| {
            let mut s = seen.lock().unwrap();
            s.0.insert(b.to_vec());
            s.1 += usize::from(serde_json::from_slice::<Value>(b).is_ok());
        });
        let (distinct, json) = seen.into_inner().unwrap();
        assert!(distinct.len() > 50, "{} distinct inputs", distinct.len());
        // The tree mutations keep many inputs valid JSON, which byte mutations alone rarely do.
        assert!(json as u64 > tried / 4, "{json} of {tried} inputs are JSON");
    }
}
