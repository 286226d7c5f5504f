//! No build steps of its own: the build-dependency in Cargo.toml only sets a feature of the
//! bindgen that espeakng-sys's build script uses (see the comment there).
fn main() {}
