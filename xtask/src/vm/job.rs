//! What a guest does after booting, handed to it on a small second disk: the cgroup layout
//! and either a list of steps (shell scripts run one at a time, each reported on the guest's
//! report channel) or an interactive shell. A disk rather than the kernel command line, so
//! steps may hold any text.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;

use super::{
    Cgroup, RunFile,
    disk::{Layout, make_ext4},
    recreate_dir,
};
use crate::tasks::status;

/// Steps are small scripts; this holds thousands.
const JOB_IMAGE_SIZE: u64 = 32 << 20;
/// Room for a kernel's headers (about 80 MiB unpacked).
const HEADERS_SIZE: u64 = 256 << 20;

pub enum Mode {
    /// Run these shell scripts in order; step N is reported as N (from 0).
    Steps(Vec<String>),
    /// An interactive shell on the console.
    Shell,
}

pub struct Job {
    pub mode: Mode,
    pub cgroup: Cgroup,
    /// The directory steps start in.
    pub workdir: PathBuf,
    /// How long one step may run before the guest kills it.
    pub step_timeout: Duration,
    /// Unpacked linux-headers packages for the guest to install (see kernels.rs).
    pub headers: Option<PathBuf>,
}

impl Job {
    /// Writes the job to an image in `dir` of this run's own, removed when it is dropped.
    pub fn write_image(&self, dir: &Path) -> anyhow::Result<RunFile> {
        let pid = std::process::id();
        let tree = dir.join(format!("job-{pid}"));
        recreate_dir(&tree)?;
        write(&tree.join("config"), &self.config())?;
        if let Mode::Steps(steps) = &self.mode {
            let steps_dir = tree.join("steps");
            fs::create_dir(&steps_dir)
                .with_context(|| format!("cannot create {}", steps_dir.display()))?;
            for (index, script) in steps.iter().enumerate() {
                write(&steps_dir.join(step_file_name(index)), script)?;
            }
        }
        let mut size = JOB_IMAGE_SIZE;
        if let Some(headers) = &self.headers {
            // Hard links: the headers are tens of MiB and do not change.
            status(
                Command::new("cp")
                    .arg("-al")
                    .arg(headers)
                    .arg(tree.join("headers")),
            )?;
            size += HEADERS_SIZE;
        }
        let image = RunFile(dir.join(format!("job-{pid}.img")));
        // Bare: init finds it by its label.
        make_ext4(&tree, &image.0, size, "memtrace-job", Layout::Bare)?;
        let _ = fs::remove_dir_all(&tree);
        Ok(image)
    }

    /// Shell assignments the guest's init sources.
    fn config(&self) -> String {
        let mode = match self.mode {
            Mode::Steps(_) => "steps",
            Mode::Shell => "shell",
        };
        let mut config = String::new();
        let _ = writeln!(config, "MODE={mode}");
        let _ = writeln!(config, "CGROUP={}", self.cgroup.name());
        let _ = writeln!(
            config,
            "WORKDIR={}",
            shell_quote(&self.workdir.to_string_lossy())
        );
        let _ = writeln!(config, "STEP_TIMEOUT={}", self.step_timeout.as_secs());
        config
    }
}

/// Step files sort in run order; the guest reports a step by its file name.
fn step_file_name(index: usize) -> String {
    format!("{index:05}")
}

/// The step index of a file name the guest reported.
pub fn step_index(file_name: &str) -> Option<usize> {
    file_name.parse().ok()
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// `text` as one word for sh, whatever it holds.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_survive_quotes_and_spaces() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's a b"), r"'it'\''s a b'");
    }

    #[test]
    fn step_names_sort_in_run_order_and_parse_back() {
        assert!(step_file_name(9) < step_file_name(10));
        assert_eq!(step_index(&step_file_name(123)), Some(123));
    }
}
