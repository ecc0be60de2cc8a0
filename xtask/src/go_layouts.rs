//! `cargo xtask go-layouts`: generates memtrace/src/analysis/golang/layouts.rs, where the Go
//! runtime keeps its heap figures in each Go release the tests build with, for binaries
//! without DWARF (`-ldflags=-w`: the symbol table gives the globals' addresses, the table the
//! offsets; `-s -w`: the table's anchor instructions give the addresses too).
//!
//! Nothing in the table is typed by hand: the Go integration tests' `prepare_go_builds` builds
//! the heap test program with every toolchain (default, PIE and cgo builds) and lists the
//! toolchains; a small Go program (xtask/go/layouts, on Go's own debug/dwarf, independent of
//! memtrace's reader) reads each default build's DWARF for the fields memtrace-common names,
//! and each build's code (`go tool objdump` of its own toolchain) for the instructions of the
//! anchor functions that address the globals RIP-relative. The tests check the table against
//! memtrace's own DWARF reading of every toolchain's build: memtrace notes any difference.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use memtrace_common::go_runtime::{ANCHORS, Field, Global};
use serde_json::Value;

use crate::tasks::{capture, cargo, status, workspace_root};

/// Where the tests keep their Go builds (CARGO_TARGET_TMPDIR/go-toolchains/built).
const BUILT: &str = "target/tmp/go-toolchains/built";
/// The generated table.
const TABLE: &str = "memtrace/src/analysis/golang/layouts.rs";
/// Builds whose anchor instructions are recorded: the runtime is compiled differently for PIE.
const CODE_BUILDS: [&str; 3] = ["heap-plain", "heap-pie", "heap-cgo"];

pub fn generate() -> anyhow::Result<()> {
    let root = workspace_root();
    // Builds every program with every toolchain, fetching toolchains as needed.
    status(
        cargo()
            .args(["test", "-p", "memtrace", "--test", "golang", "--"])
            .args(["--exact", "prepare_go_builds", "--nocapture"])
            .env("CI", "true"),
    )?;
    let built = root.join(BUILT);
    let manifest = fs::read_to_string(built.join("toolchains.json"))
        .context("prepare_go_builds wrote no toolchains.json")?;
    let toolchains: Vec<Value> = serde_json::from_str(&manifest).context("toolchains.json")?;
    let dumper = build_dumper(&root)?;
    let mut entries = Vec::new();
    for toolchain in &toolchains {
        let name = toolchain["name"].as_str().context("toolchain name")?;
        let go = Path::new(toolchain["go"].as_str().context("toolchain go")?);
        let version = toolchain["version"].as_str().context("toolchain version")?;
        eprintln!("xtask: {version}: reading DWARF and code");
        let dir = built.join(name);
        let plain = dump(&dumper, go, &dir.join("heap-plain/heap"))?;
        let mut anchors = Vec::new();
        for build in CODE_BUILDS {
            let code = dump(&dumper, go, &dir.join(build).join("heap"))?;
            if code["offsets"] != plain["offsets"] {
                bail!("{version}: {build} lays out the runtime differently from the default build");
            }
            for anchor in code["anchors"].as_array().context("anchors")? {
                if !anchors.contains(anchor) {
                    anchors.push(anchor.clone());
                }
            }
        }
        entries.push(entry(version, &plain, &anchors)?);
    }
    let names: Vec<&str> = toolchains
        .iter()
        .filter_map(|t| t["version"].as_str())
        .collect();
    let text = render(&names, &entries);
    let path = root.join(TABLE);
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    status(
        Command::new("rustfmt")
            .args(["--edition", "2024"])
            .arg(&path),
    )?;
    eprintln!("xtask: wrote {TABLE} ({} Go releases)", entries.len());
    Ok(())
}

/// Builds xtask/go/layouts with the local Go.
fn build_dumper(root: &Path) -> anyhow::Result<PathBuf> {
    let out = root.join("target/tmp/go-layouts-dumper");
    status(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(root.join("xtask/go/layouts"))
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "")
            .env("GOTOOLCHAIN", "local")
            .env("GOCACHE", root.join("target/tmp/go-toolchains/cache")),
    )?;
    Ok(out)
}

fn dump(dumper: &Path, go: &Path, binary: &Path) -> anyhow::Result<Value> {
    let fields: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
    let text = capture(
        Command::new(dumper)
            .arg("-go")
            .arg(go)
            .arg("-fields")
            .arg(fields.join(","))
            .arg("-anchors")
            .arg(ANCHORS.join(","))
            .arg(binary),
    )?;
    serde_json::from_str(&text).with_context(|| format!("dump of {}", binary.display()))
}

/// One release's entry as Rust source.
fn entry(version: &str, dump: &Value, anchors: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    let sizes: Vec<String> = Global::ALL
        .iter()
        .map(|g| dump["sizes"][g.symbol()].as_u64().map(|s| s.to_string()))
        .collect::<Option<_>>()
        .context("a global without a size")?;
    let _ = writeln!(out, "    Entry {{\n        go: {version:?},");
    let _ = writeln!(out, "        sizes: [{}],", sizes.join(", "));
    let _ = writeln!(out, "        offsets: [");
    for field in Field::ALL {
        let offset = &dump["offsets"][field.name()];
        let value = match offset.as_u64() {
            Some(offset) => format!("Some({offset})"),
            None if field.optional() && offset.is_null() => "None".to_owned(),
            None => bail!("{version}: {} not found in DWARF", field.name()),
        };
        let _ = writeln!(out, "            {value}, // {}", field.name());
    }
    let _ = writeln!(out, "        ],\n        anchors: &[");
    for anchor in anchors {
        let function = anchor["function"].as_str().context("anchor function")?;
        let _ = writeln!(
            out,
            "            Anchor {{\n                function: {function:?},\n                refs: &["
        );
        for r in anchor["refs"].as_array().context("refs")? {
            let global = r["global"].as_str().context("ref global")?;
            let global = Global::ALL
                .iter()
                .find(|g| g.symbol() == global)
                .with_context(|| format!("unknown global {global}"))?;
            let bytes = r["bytes"].as_str().context("ref bytes")?;
            let code: Vec<String> = (0..bytes.len())
                .step_by(2)
                .map(|i| format!("0x{}", &bytes[i..i + 2]))
                .collect();
            let _ = writeln!(
                out,
                "                    Ref {{ offset: {}, global: Global::{global:?}, addend: {}, \
                 code: &[{}], disp_at: {} }},",
                r["offset"],
                r["addend"],
                code.join(", "),
                r["disp_at"]
            );
        }
        let _ = writeln!(out, "                ],\n            }},");
    }
    let _ = writeln!(out, "        ],\n    }},");
    Ok(out)
}

fn render(versions: &[&str], entries: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "//! @generated by `cargo xtask go-layouts` from the DWARF and code of memtrace/tests/go/heap \
         as built by {}. Do not edit: regenerate.\n",
        versions.join(", ")
    );
    out.push_str("use memtrace_common::go_runtime::Global;\n\n");
    out.push_str("use super::table::{Anchor, Entry, Ref};\n\n");
    out.push_str("/// One entry per Go release the tests build with.\n");
    out.push_str("pub const ENTRIES: &[Entry] = &[\n");
    for entry in entries {
        out.push_str(entry);
    }
    out.push_str("];\n");
    out
}
