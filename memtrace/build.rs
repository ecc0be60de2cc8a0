//! Builds the kernel programs (`memtrace-ebpf`) for the BPF target and places them in OUT_DIR.

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // bpfel-unknown-none is a tier 3 target: `core` must be built from source (-Z build-std),
    // which stable cargo allows only with RUSTC_BOOTSTRAP=1. Set it here, for the nested eBPF
    // build only, so toggling it never invalidates the host build.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    // aya-build passes every line the nested cargo prints to cargo as a `cargo:warning`, so its
    // progress (Downloading, Compiling, Finished) read as dozens of warnings in a fresh build.
    // Quiet, the nested cargo prints only diagnostics: real warnings and errors.
    // SAFETY: as above.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };

    // Build with the same pinned toolchain (rust-toolchain.toml) as the host: bpf-linker is built
    // against its LLVM major. aya-build's default (nightly) may carry a newer LLVM.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "1.95.0".to_owned());
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../memtrace-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "memtrace-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}
