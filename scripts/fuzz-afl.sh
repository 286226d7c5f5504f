#!/usr/bin/env bash
# Coverage-guided fuzzing of the spec parser and validation with AFL++ (`cargo afl` on the
# pinned stable toolchain: rustc's own coverage instrumentation, no LLVM plugins, so no CMPLOG;
# a dictionary of the spec's keys and values stands in for it). Installs cargo-afl once.
# Runs REELSMITH_AFL_SECONDS (default 60); a crash fails the run and is kept under
# target/fuzz-crashes/afl-spec/ (replay: target/fuzz-afl/debug/spec < FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${REELSMITH_AFL_SECONDS:-60}"
version=0.18.2
if ! cargo afl --version 2>/dev/null | grep -q "$version"; then
  echo "fuzz-afl: installing cargo-afl $version (builds AFL++ from its bundled sources)" >&2
  cargo install cargo-afl --locked --version "$version" >&2
fi
# AFL++ is built per toolchain: make sure the pinned one has it.
cargo afl config --build >/dev/null 2>&1 || true
export CARGO_TARGET_DIR="$PWD/target/fuzz-afl"
(cd fuzz/afl && cargo afl build --locked --bin spec)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
  cargo afl fuzz -i crates/engine/fuzz/spec -o "$out" -x fuzz/afl/spec.dict -V "$secs" \
  "$CARGO_TARGET_DIR/debug/spec" > "$out.log" 2>&1 || { tail -40 "$out.log" >&2; exit 1; }
stats="$out/default/fuzzer_stats"
execs=$(awk -F': *' '/^execs_done/ {print $2}' "$stats")
paths=$(awk -F': *' '/^corpus_count/ {print $2}' "$stats")
crashes=$(find "$out/default/crashes" -name 'id:*' | wc -l)
echo "fuzz-afl: spec: $execs runs in ${secs} s, $paths inputs with new coverage, $crashes crashes" >&2
if [ "$crashes" -gt 0 ]; then
  mkdir -p target/fuzz-crashes/afl-spec
  cp "$out"/default/crashes/id:* target/fuzz-crashes/afl-spec/
  echo "fuzz-afl: crashes kept in target/fuzz-crashes/afl-spec/" >&2
  exit 1
fi
rm -f "$out.log"
