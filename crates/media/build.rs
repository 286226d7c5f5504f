//! Builds the small C faces of libx264 (`src/x264_shim.c`) and of libavcodec's AAC encoder
//! (`src/aac_shim.c`) that the in-process encoders call, and links those libraries (Debian
//! `libx264-dev`, `libavcodec-dev`, installed by scripts/setup.sh).
//!
//! The build-dependency on bindgen in Cargo.toml only sets a feature of the bindgen that
//! espeakng-sys's build script uses (see the comment there).
fn main() {
    println!("cargo:rerun-if-changed=src/x264_shim.c");
    cc::Build::new().file("src/x264_shim.c").warnings(true).compile("reelsmith_x264_shim");
    println!("cargo:rustc-link-lib=x264");
    println!("cargo:rerun-if-changed=src/aac_shim.c");
    cc::Build::new().file("src/aac_shim.c").warnings(true).compile("reelsmith_aac_shim");
    println!("cargo:rustc-link-lib=avcodec");
    println!("cargo:rustc-link-lib=avutil");
}
