//! Link-time settings for the cairn binary.

fn main() {
    // Every `cairn run` pays the dynamic loader's relocation of the
    // executable before main: ~25 000 relative relocations (Rust's vtables
    // and string tables in a position-independent executable), 600 KB of
    // RELA entries read at each start. Packed (DT_RELR, glibc >= 2.36,
    // binutils >= 2.38) they take a few KB and are applied in a tight loop.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
