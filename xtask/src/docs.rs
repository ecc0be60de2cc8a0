//! `cargo xtask docs`: the man page and shell completions, generated from memtrace's own clap
//! definition so they can never drift from `memtrace --help`.

use std::{fs, path::Path};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

// The CLI definition itself, compiled into xtask too. It depends on clap and std only.
#[path = "../../memtrace/src/cli.rs"]
#[allow(dead_code)]
mod cli;

/// Writes `memtrace.1` and completions for bash, zsh and fish into `out`.
pub fn generate(out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // `version` in the definition names the crate that compiles it: here xtask, so set it.
    let command = cli::Cli::command().version(memtrace_version()?);

    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .context("rendering the man page")?;
    let man = out.join("memtrace.1");
    fs::write(&man, page).with_context(|| format!("cannot write {}", man.display()))?;
    eprintln!("xtask: wrote {}", man.display());

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut command.clone(), "memtrace", out)
            .with_context(|| format!("writing {shell} completions"))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// `version = "…"` from memtrace's Cargo.toml.
fn memtrace_version() -> anyhow::Result<&'static str> {
    let manifest = include_str!("../../memtrace/Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .context("memtrace/Cargo.toml has no version line")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_and_completions_name_every_option() {
        let dir = std::env::temp_dir().join(format!("memtrace-docs-{}", std::process::id()));
        generate(&dir).expect("generate docs");
        let man = fs::read_to_string(dir.join("memtrace.1")).expect("man page");
        let bash = fs::read_to_string(dir.join("memtrace.bash")).expect("bash completions");
        for arg in cli::Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            // roff escapes '-' as '\-'.
            assert!(
                man.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                "{long}"
            );
            assert!(bash.contains(&format!("--{long}")), "{long}");
        }
        assert!(dir.join("_memtrace").is_file() && dir.join("memtrace.fish").is_file());
        let _ = fs::remove_dir_all(dir);
    }
}
