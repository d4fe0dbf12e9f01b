//! Link-time settings for the cairn binary.

fn main() {
    // Every `cairn run` pays the dynamic loader's relocation of the
    // executable before main: ~25 000 relative relocations (Rust's vtables
    // and string tables in a position-independent executable), 600 KB of
    // RELA entries read at each start. Packed (DT_RELR, glibc >= 2.36,
    // binutils >= 2.38) they take a few KB and are applied in a tight loop.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // Applied, they still write to every page of .data.rel.ro (440 KB):
    // ~110 copy-on-write page faults per start, about 0.3 ms of a 3 ms
    // warm run (measured: 366 -> 257 minor faults, 5.17 -> 4.90 ms under
    // setpriv). A non-PIE executable has those addresses fixed at link
    // time. What it gives up is the randomised load address of the
    // executable itself (libraries, stack, heap and mmaps stay random):
    // its parsers of untrusted bytes are safe Rust, `unsafe` is confined
    // to src/sys/. Only the binary: libraries, build scripts and proc
    // macros are linked as before.
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
