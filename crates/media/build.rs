//! Builds the small C face of libx264 (`src/x264_shim.c`) that the in-process H.264 encoder
//! calls, and links libx264 (Debian `libx264-dev`, installed by scripts/setup.sh).
//!
//! The build-dependency on bindgen in Cargo.toml only sets a feature of the bindgen that
//! espeakng-sys's build script uses (see the comment there).
fn main() {
    println!("cargo:rerun-if-changed=src/x264_shim.c");
    cc::Build::new().file("src/x264_shim.c").warnings(true).compile("reelsmith_x264_shim");
    println!("cargo:rustc-link-lib=x264");
}
