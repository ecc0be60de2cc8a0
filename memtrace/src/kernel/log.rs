//! The kernel programs' diagnostics (aya-log), shown on stderr with `--verbose`: rare
//! conditions such as a full map or a field value the tracepoint format does not allow.

use aya::Ebpf;
use aya_log::EbpfLogger;

/// Writes each kernel log record as one stderr line.
pub struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!(
            "memtrace: kernel: {}: {}",
            record.level().as_str().to_lowercase(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// The kernel programs' log ring. Readable (as an fd) when records wait; [`Self::flush`]
/// prints them.
pub struct KernelLog(EbpfLogger<Stderr>);

impl KernelLog {
    pub fn init(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        EbpfLogger::init_with_logger(ebpf, Stderr)
            .map(Self)
            .map_err(|e| anyhow::anyhow!("cannot read the kernel programs' log: {e}"))
    }

    /// Prints every waiting record.
    pub fn flush(&mut self) {
        self.0.flush();
    }
}

impl std::os::fd::AsRawFd for KernelLog {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
