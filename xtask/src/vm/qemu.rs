//! Boots a guest under QEMU and reads what its init reports.
//!
//! KVM does not work on the development VMs, so guests run under TCG, single-threaded:
//! multi-threaded TCG panicked (6.12) or soft-locked (5.10) while tracepoints were being
//! patched at attach. Two serial ports: ttyS0 is the console (kernel messages), written to a
//! log file; ttyS1 is init's report channel, QEMU's stdout here. Both disks are namespaces of
//! one NVMe controller (NVMe and ext4 are built into Debian's cloud kernels; virtio-blk is a
//! module); the kernel finds root by PARTUUID and init the job disk by label.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{disk::ROOT_PARTUUID, kernels::Prepared};

const QEMU: &str = "qemu-system-x86_64";
/// Prefix of init's report lines (see guest/init.sh); other lines are step output.
const MARK: &str = "@@memtrace-vm@@ ";
/// Root by partition (disk names are not stable), init ours, and a panic (e.g. init dying)
/// ends the guest at once instead of hanging until a timeout.
fn cmdline() -> String {
    format!(
        "console=ttyS0 root=PARTUUID={ROOT_PARTUUID} rw rootfstype=ext4 rootwait \
         init=/vm/init panic=-1"
    )
}

/// One guest: a kernel, the root image (shared, never written), the job disk.
pub struct Machine<'a> {
    pub kernel: &'a Prepared,
    pub root: &'a Path,
    pub job: &'a Path,
    /// The console's log (kernel messages, and init's when it fails).
    pub console_log: PathBuf,
}

/// What init reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Set up and about to run the job, on kernel `release`.
    Booted { release: String },
    /// Step `0` started.
    Start(String),
    /// A line the running step printed.
    Output(String),
    /// The step ended with this exit status (137 when killed at its time limit).
    End { step: String, status: i32 },
    /// Every step ran; the guest powers off.
    Done,
    /// Init could not set the guest up.
    Error(String),
}

impl Machine<'_> {
    fn command(&self) -> Command {
        let mut cmd = Command::new(QEMU);
        cmd.args(["-nodefaults", "-display", "none", "-no-reboot"])
            .args(["-M", "q35", "-accel", "tcg,thread=single", "-cpu", "max"])
            .args(["-smp", "2", "-m", "2G"])
            .arg("-kernel")
            .arg(&self.kernel.vmlinuz)
            .arg("-append")
            .arg(cmdline())
            // snapshot=on: the guest writes to a temporary overlay, the image stays pristine.
            .arg("-drive")
            .arg(drive("root", self.root, "snapshot=on"))
            .arg("-drive")
            .arg(drive("job", self.job, "readonly=on"))
            .args(["-device", "nvme,id=nvme,serial=memtrace"])
            .args(["-device", "nvme-ns,bus=nvme,nsid=1,drive=root"])
            .args(["-device", "nvme-ns,bus=nvme,nsid=2,drive=job"]);
        cmd
    }

    /// Boots with the console going to its log and init's reports coming to us.
    pub fn start(&self) -> anyhow::Result<Running> {
        let mut child = self
            .command()
            .arg("-serial")
            .arg(format!("file:{}", self.console_log.display()))
            .args(["-serial", "stdio"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {QEMU}"))?;
        let stdout = child.stdout.take().context("QEMU's stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line);
                if tx.send(parse(text.trim_end_matches(['\n', '\r']))).is_err() {
                    break;
                }
                line.clear();
            }
        });
        Ok(Running {
            child,
            events: rx,
            started: Instant::now(),
        })
    }

    /// Boots with the console on this terminal, for a person to use; returns when the guest
    /// powers off (or Ctrl-A X).
    pub fn interactive(&self) -> anyhow::Result<ExitStatus> {
        self.command()
            .args(["-serial", "mon:stdio", "-serial", "null"])
            .status()
            .with_context(|| format!("cannot start {QEMU}"))
    }
}

fn drive(id: &str, image: &Path, options: &str) -> String {
    // QEMU's option syntax doubles commas inside values.
    let file = image.display().to_string().replace(',', ",,");
    format!("file={file},if=none,id={id},format=raw,{options}")
}

fn parse(line: &str) -> Event {
    let Some(report) = line.strip_prefix(MARK) else {
        return Event::Output(line.to_owned());
    };
    let mut words = report.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("booted"), Some(release), _) => Event::Booted {
            release: release.to_owned(),
        },
        (Some("start"), Some(step), _) => Event::Start(step.to_owned()),
        (Some("end"), Some(step), Some(status)) => Event::End {
            step: step.to_owned(),
            status: status.parse().unwrap_or(-1),
        },
        (Some("done"), _, _) => Event::Done,
        (Some("error"), _, _) => Event::Error(report["error".len()..].trim().to_owned()),
        _ => Event::Output(line.to_owned()),
    }
}

/// A booted (or booting) guest. Dropping it kills QEMU.
pub struct Running {
    child: Child,
    events: Receiver<Event>,
    pub started: Instant,
}

/// Why no event came.
pub enum Silence {
    /// QEMU exited (the guest powered off or crashed).
    Stopped,
    /// Nothing within the time given; QEMU has been killed.
    TimedOut,
}

impl Running {
    /// The next report within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Event, Silence> {
        match self.events.recv_timeout(timeout) {
            Ok(event) => Ok(event),
            Err(RecvTimeoutError::Disconnected) => Err(Silence::Stopped),
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Err(Silence::TimedOut)
            }
        }
    }

    /// Waits up to `grace` for QEMU to exit after the guest said it is done.
    pub fn finish(mut self, grace: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("waiting for QEMU")? {
                if !status.success() {
                    bail!("QEMU exited with {status}");
                }
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        bail!("the guest did not power off within {grace:?}")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_told_from_step_output() {
        assert_eq!(
            parse("@@memtrace-vm@@ booted 6.1.0-57-cloud-amd64"),
            Event::Booted {
                release: "6.1.0-57-cloud-amd64".into()
            }
        );
        assert_eq!(
            parse("@@memtrace-vm@@ end 00003 101"),
            Event::End {
                step: "00003".into(),
                status: 101
            }
        );
        assert_eq!(
            parse("@@memtrace-vm@@ error init: 'ip link set lo up' failed"),
            Event::Error("init: 'ip link set lo up' failed".into())
        );
        assert_eq!(
            parse("test madvise ... ok"),
            Event::Output("test madvise ... ok".into())
        );
    }
}
