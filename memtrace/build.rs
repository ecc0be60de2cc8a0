//! Builds the kernel programs (`memtrace-ebpf`) for the BPF target and places them in OUT_DIR,
//! and the C workload of the `--stacks` tests (`tests/c/stacks.c`).

use std::{path::Path, process::Command};

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    build_c_workload();
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

/// Builds `tests/c/stacks.c` with frame pointers into OUT_DIR (`stacks-workload`, and a
/// stripped copy `stacks-workload-stripped`), with the C compiler Rust links with here. The
/// tests embed the binaries, so a guest kernel needs no compiler. Failing to build it does not
/// stop memtrace's build: the binaries are then empty and the tests that run them fail,
/// saying why.
fn build_c_workload() {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/stacks.c");
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CC");
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    for (name, extra) in [
        ("stacks-workload", None),
        ("stacks-workload-stripped", Some("-s")),
    ] {
        let output = Path::new(&out_dir).join(name);
        let built = Command::new(&cc)
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline", "-o"])
            .arg(&output)
            .arg(source)
            .args(extra)
            .status();
        if !built.is_ok_and(|s| s.success()) {
            println!("cargo:warning=cannot build {source} with {cc}: the --stacks tests will fail");
            let _ = std::fs::write(&output, b"");
        }
    }
}
