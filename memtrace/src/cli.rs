//! Command line.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// How the report groups processes (`--by`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum GroupBy {
    #[default]
    /// Each process on its own.
    Process,
    /// Processes by the container their cgroup names (`host` for those of none).
    Container,
    /// Processes by cgroup.
    Cgroup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// Bytes released by madvise.
    Released,
    /// Minor + major page faults.
    Faults,
    /// Resident memory (RSS) at the end.
    Rss,
    /// Bytes mapped by mmap, mremap and brk.
    Mapped,
}

/// Trace what a process (or the whole machine) does with memory: which madvise advice releases
/// pages and how much, what it maps and unmaps, its page faults and its RSS.
#[derive(Debug, Parser)]
#[command(name = "memtrace", version)]
// `memtrace --json reclaim` would silently drop --json: subcommands take their own flags.
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = "\
Examples, by the three jobs memtrace is for:

 1. Incident on a process: what is it doing with memory, and why is its RSS what it is?
  sudo memtrace --pid 1234                  live view; Ctrl-C (or pid exit) for the report
  sudo memtrace --pid 1234 --duration 30    30 seconds, then the report
  sudo memtrace --pid 1234 --follow         include children it forks while traced
  sudo memtrace --duration 10 --sort faults every process for 10 s; top 10 by faults
  sudo memtrace --pid 1234 --json | jq .    JSON Lines: every event, then a summary

 2. Reclaim latency: who stalls in direct or memcg reclaim, for how long; kswapd; OOM kills
  sudo memtrace reclaim                     every process, a line per second, then histograms
  sudo memtrace reclaim --pid 1234 -d 60    one process's stalls for a minute

 3. Go: does this binary release with MADV_FREE or MADV_DONTNEED, and why?
  sudo memtrace go --pid 1234               verdict from the binary, GODEBUG and what it does
  sudo memtrace go --pid 1234 --wait 120    wait up to 2 min for the scavenger to release

Fleets: sudo memtrace --prometheus 0.0.0.0:9464 serves totals per cgroup at /metrics
  (--prometheus-processes 20: and the top 20 processes by --sort).")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub scope: Scope,

    /// Only report processes with this name (as in /proc/PID/comm: the kernel keeps the first 15
    /// bytes, so a longer name is cut there, with a warning). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,

    /// Only report processes in this container (its id, or a prefix of at least 4 hex digits,
    /// as `docker ps` and `podman ps` show it). Repeatable.
    #[arg(long, value_name = "ID", value_parser = parse_container_id)]
    pub container: Vec<String>,

    /// Only report processes in this cgroup or below it (a path as /proc/PID/cgroup shows
    /// it: the v1 memory hierarchy's, else v2's). Repeatable.
    #[arg(long, value_name = "PATH", value_parser = parse_cgroup_path)]
    pub cgroup: Vec<String>,

    /// Group the report by container or by cgroup, each group with its memory cgroup's own
    /// accounting (usage, limit, page cache) beside its processes' RSS.
    #[arg(long, value_enum, default_value_t = GroupBy::Process)]
    pub by: GroupBy,

    /// Also trace children forked by traced processes after memtrace started.
    #[arg(long, requires = "pid")]
    pub follow: bool,

    /// Stream every user-mode page fault (address, ip, read/write) as an event, and count
    /// user-mode faults by access. Costly on fault-heavy workloads: it runs a program on every
    /// fault. Minor and major fault counts come from the kernel's own counters either way.
    #[arg(long)]
    pub fault_events: bool,

    /// Count where memory calls come from: the user stack of every madvise, mmap, munmap,
    /// mremap and brk call, and the kernel and user stacks of reclaim stalls, counted per
    /// process and stack in the kernel. The report shows each process's top stacks by bytes
    /// and by calls, named while the process lives.
    #[arg(long)]
    pub stacks: bool,

    /// Attach the same hooks with programs that return at once (for `cargo xtask bench`: the
    /// cost of the hooks themselves). Reports nothing.
    #[arg(long, hide = true)]
    pub bench_empty_programs: bool,

    /// Keep the syscall programs on their tracepoints even where BPF trampolines work (for
    /// `cargo xtask bench`: the two compared on one kernel).
    #[arg(long, hide = true)]
    pub bench_tracepoints_only: bool,

    /// Attach the syscall entry programs that park each call's arguments even where the exit
    /// program can read them from the saved registers (for `cargo xtask bench`: two programs
    /// per call against one).
    #[arg(long, hide = true)]
    pub bench_entry_programs: bool,

    /// Order of processes in the report.
    #[arg(long, value_enum, default_value_t = SortKey::Released)]
    pub sort: SortKey,

    /// How many processes the text report shows when tracing every process (at least 1); with
    /// --follow, how many the live screen shows on a terminal that does not report its size.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = parse_top)]
    pub top: usize,

    /// How often the live view refreshes: a top-style screen when stdout is a terminal, one
    /// plain line per interval otherwise (not with --json).
    #[arg(long, short = 'i', value_name = "SECS", default_value = "1",
          value_parser = parse_interval, allow_negative_numbers = true)]
    pub interval: Duration,

    /// Print JSON Lines on stdout: one object per event, then a summary object.
    #[arg(long)]
    pub json: bool,

    /// With --json, print only the start and summary lines, no line per event. The memory
    /// syscalls are then counted in the kernel rather than sent one by one, as for the text
    /// report and --prometheus: the same totals, at a lower cost to the traced processes.
    #[arg(long, requires = "json")]
    pub no_events: bool,

    /// Serve the totals in the Prometheus text format at http://ADDR/metrics. ADDR is PORT
    /// (bound to 127.0.0.1), or HOST:PORT to listen elsewhere (e.g. 0.0.0.0:9464 in a
    /// DaemonSet).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub prometheus: Option<SocketAddr>,

    /// With --prometheus, also serve per-process series (labels pid, start_time, comm, cgroup)
    /// for the top N processes by --sort; the rest are summed in one series with pid="other".
    /// Default: none when tracing every process (the series are per cgroup), 20 with --pid.
    #[arg(long, value_name = "N", requires = "prometheus", value_parser = parse_count)]
    pub prometheus_processes: Option<usize>,

    /// When tracing every process, how many processes memtrace keeps in memory: past this,
    /// exited ones are folded into their cgroup's totals and forgotten, the lowest-ranked by
    /// --sort first (never one the report's or the metrics' top N would show).
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = parse_max_processes)]
    pub max_processes: usize,

    #[command(flatten)]
    pub kernel: KernelArgs,
}

/// Which processes and for how long: `memtrace` and `memtrace reclaim`.
#[derive(Debug, Args)]
pub struct Scope {
    /// Process to trace (its threads included). Repeat for several processes. Without it,
    /// every process is traced.
    #[arg(long, short = 'p', value_name = "PID",
          value_parser = parse_pid, allow_negative_numbers = true)]
    pub pid: Vec<u32>,

    /// Stop after this many seconds (fractions allowed).
    #[arg(long, short = 'd', value_name = "SECS", value_parser = parse_duration,
          allow_negative_numbers = true)]
    pub duration: Option<Duration>,
}

/// How memtrace works with the kernel: every command.
#[derive(Debug, Args)]
pub struct KernelArgs {
    /// Size of the kernel-to-userspace events ring buffer, in KiB (a power of two from 4 to
    /// 1048576, i.e. 1 GiB).
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = parse_ring_kib)]
    pub ring_size: u32,

    /// Show the kernel programs' diagnostics on stderr (a full map, an unexpected field).
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reclaim latency: direct and memory-cgroup reclaim stalls per process (histograms,
    /// p50/p99), kswapd activity, pages scanned and reclaimed, OOM kills. Stalls of every
    /// process unless --pid is given; OOM kills and kswapd whoever they concern.
    Reclaim(ReclaimArgs),
    /// How a (Go) process gives memory back: the madvise mode its Go version and GODEBUG select,
    /// the mode it is seen using, its LazyFree memory, and one verdict.
    Go(GoArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sudo memtrace reclaim                       every process, a summary line per second
  sudo memtrace reclaim --pid 1234 -d 30      one process's stalls for 30 s
  sudo memtrace reclaim --interval 10 --json  JSON Lines: stalls, 10 s intervals, a summary
  sudo memtrace reclaim --stacks -d 30        and where they stall: kernel and user stacks")]
pub struct ReclaimArgs {
    #[command(flatten)]
    pub scope: Scope,

    /// Print a summary of the stalls of each process every this many seconds.
    #[arg(long, short = 'i', value_name = "SECS", value_parser = parse_interval,
          allow_negative_numbers = true,
          default_value = "1")]
    pub interval: Duration,

    /// Print JSON Lines on stdout: each stall, OOM kill and interval, then a summary.
    #[arg(long)]
    pub json: bool,

    /// Count where stalls come from: the kernel and user stacks of every direct and memcg
    /// reclaim stall, counted per process and stack in the kernel. The report shows each
    /// process's top stacks by time stalled and by stalls.
    #[arg(long)]
    pub stacks: bool,

    #[command(flatten)]
    pub kernel: KernelArgs,
}

#[derive(Debug, Args)]
pub struct GoArgs {
    /// The process to judge.
    #[arg(long, short = 'p', value_name = "PID",
          value_parser = parse_pid, allow_negative_numbers = true)]
    pub pid: u32,

    /// Watch at most this many seconds for the first release. The Go scavenger may release
    /// only after minutes; debug.FreeOSMemory() releases at once.
    #[arg(long, short = 'w', value_name = "SECS", default_value = "10",
          value_parser = parse_duration, allow_negative_numbers = true)]
    pub wait: Duration,

    /// Print the verdict as one JSON object (`"type":"go_verdict"`).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub kernel: KernelArgs,
}

fn parse_pid(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(pid) if pid > 0 && pid <= i64::from(i32::MAX) => Ok(pid as u32),
        Ok(pid) => Err(format!("{pid} is not a process id (pids are positive)")),
        Err(_) => Err(format!("'{s}' is not a process id")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .ok()
        .filter(|secs: &f64| !secs.is_nan())
        .ok_or_else(|| format!("'{s}' is not a number of seconds"))?;
    if secs <= 0.0 {
        return Err(format!("{s} is not a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s} seconds is too long (at most {MAX_SECS:.0})"))
        .and_then(|d| {
            (d.as_secs_f64() <= MAX_SECS)
                .then_some(d)
                .ok_or_else(|| format!("{s} seconds is too long (at most {MAX_SECS:.0})"))
        })
}

/// Longer than any trace anyone will run (over three years), short enough for every timer.
const MAX_SECS: f64 = 1e8;
/// Live views and interval lines no faster than ten a second: any faster is unreadable, and
/// each one reads the kernel's counters and /proc.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn parse_interval(s: &str) -> Result<Duration, String> {
    let interval = parse_duration(s)?;
    if interval < MIN_INTERVAL {
        return Err(format!(
            "{s} s is too short an interval: at least {} s",
            MIN_INTERVAL.as_secs_f64()
        ));
    }
    Ok(interval)
}

fn parse_container_id(s: &str) -> Result<String, String> {
    let id = s.to_ascii_lowercase();
    if id.len() < 4 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s} is not a container id: 4 to 64 hex digits, as `docker ps` or `podman ps` shows"
        ));
    }
    Ok(id)
}

fn parse_cgroup_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "{s} is not a cgroup path: it starts with / (as in /proc/PID/cgroup)"
        ));
    }
    // `/a/b/` is `/a/b`; `/` stays.
    let trimmed = s.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

fn parse_top(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("--top 0 would show no process: give at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a number of processes")),
    }
}

fn parse_count(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .map_err(|_| format!("'{s}' is not a number of processes"))
}

fn parse_max_processes(s: &str) -> Result<usize, String> {
    match parse_count(s)? {
        0 => Err("--max-processes 0 would keep no process: give at least 1".to_owned()),
        n => Ok(n),
    }
}

fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = match s.trim_start_matches(':').parse::<u16>() {
        Ok(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Err(_) => match s.parse() {
            Ok(addr) => addr,
            Err(_) => resolve(s)?,
        },
    };
    if addr.port() == 0 {
        return Err("port 0 would listen on a random port nobody knows: give a port".to_owned());
    }
    Ok(addr)
}

/// `NAME:PORT` through the system's resolver (`localhost:9464`): its first IPv4 address, which
/// scrapers reach most often, else its first address.
fn resolve(s: &str) -> Result<SocketAddr, String> {
    let not_addr = || format!("'{s}' is not PORT or HOST:PORT (e.g. 9464 or 0.0.0.0:9464)");
    let (host, port) = s.rsplit_once(':').ok_or_else(not_addr)?;
    let port: u16 = port.parse().map_err(|_| not_addr())?;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}' for --prometheus: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("'{host}' resolves to no address"))
}

/// The kernel keeps the first 15 bytes of a process's name (`TASK_COMM_LEN` 16, with the
/// terminating NUL): what `--comm` compares with. Returns the name cut there (at a character
/// boundary), and whether it was cut.
pub fn comm_as_kernel_keeps(name: &str) -> (&str, bool) {
    const KEPT: usize = 15;
    if name.len() <= KEPT {
        return (name, false);
    }
    let mut end = KEPT;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    (&name[..end], true)
}

/// `--pid` values in the order given, each once.
pub fn unique(pids: &[u32]) -> Vec<u32> {
    let mut seen = std::collections::BTreeSet::new();
    pids.iter()
        .copied()
        .filter(|pid| seen.insert(*pid))
        .collect()
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size in KiB"))?;
    if kib >= 4 && kib.is_power_of_two() && kib <= 1 << 20 {
        Ok(kib)
    } else {
        Err(format!(
            "{kib} KiB: the ring size must be a power of two from 4 to 1048576 KiB"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let local = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        assert_eq!(parse_listen_addr("9464"), Ok(local(9464)));
        assert_eq!(parse_listen_addr(":9464"), Ok(local(9464)));
        assert_eq!(parse_listen_addr("localhost:9464"), Ok(local(9464)));
        assert_eq!(
            parse_listen_addr("0.0.0.0:9464").map(|a| a.ip().is_unspecified()),
            Ok(true)
        );
        assert!(
            parse_listen_addr("localhost")
                .unwrap_err()
                .contains("not PORT or HOST:PORT")
        );
        assert!(
            parse_listen_addr("no-such-host.invalid:9464")
                .unwrap_err()
                .contains("cannot resolve 'no-such-host.invalid'")
        );
    }

    #[test]
    fn names_as_the_kernel_keeps_them() {
        assert_eq!(comm_as_kernel_keeps("nginx"), ("nginx", false));
        assert_eq!(
            comm_as_kernel_keeps("prometheus-node-exporter"),
            ("prometheus-node", true)
        );
        assert_eq!(
            comm_as_kernel_keeps("fifteen-chars-x"),
            ("fifteen-chars-x", false)
        );
        // 14 ASCII bytes then a 2-byte character: cut before it, not inside it.
        assert_eq!(
            comm_as_kernel_keeps("abcdefghijklmné!"),
            ("abcdefghijklmn", true)
        );
    }

    #[test]
    fn pids_once_each_in_order() {
        assert_eq!(unique(&[7, 3, 7, 9, 3]), vec![7, 3, 9]);
    }

    #[test]
    fn pids_must_be_positive() {
        assert_eq!(parse_pid("42"), Ok(42));
        assert!(parse_pid("0").is_err());
        assert!(parse_pid("-3").is_err());
        assert!(parse_pid("abc").is_err());
        assert!(parse_pid("99999999999").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("NaN").is_err());
        assert_eq!(
            parse_duration("1e300"),
            Err("1e300 seconds is too long (at most 100000000)".to_owned())
        );
        assert!(parse_duration("inf").unwrap_err().contains("too long"));
        assert!(
            parse_interval("0.000001")
                .unwrap_err()
                .contains("at least 0.1 s")
        );
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_top("0").is_err());
        assert_eq!(parse_container_id("4F797C53").as_deref(), Ok("4f797c53"));
        assert!(parse_container_id("4f7").is_err());
        assert!(parse_container_id("libpod-4f797c53").is_err());
        assert_eq!(parse_cgroup_path("/a/b/").as_deref(), Ok("/a/b"));
        assert_eq!(parse_cgroup_path("/").as_deref(), Ok("/"));
        assert!(parse_cgroup_path("a/b").is_err());
        assert_eq!(parse_top("3"), Ok(3));
        // A negative number reaches the parser (not clap's "unexpected argument").
        let error = Cli::try_parse_from(["memtrace", "-i", "-1"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("-1 is not a positive number of seconds"),
            "{error}"
        );
    }

    #[test]
    fn listen_addresses_default_to_loopback() {
        assert_eq!(
            parse_listen_addr("9464"),
            Ok("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr(":9464"),
            Ok("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("0.0.0.0:1"),
            Ok("0.0.0.0:1".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("[::1]:80"),
            Ok("[::1]:80".parse().unwrap())
        );
        assert!(parse_listen_addr("localhost").is_err());
        assert!(parse_listen_addr("0").unwrap_err().contains("port 0"));
        assert!(parse_listen_addr("70000").is_err());
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_kib("4096"), Ok(4096));
        assert!(parse_ring_kib("1000").is_err());
        assert!(parse_ring_kib("2").is_err());
    }

    #[test]
    fn reclaim_subcommand() {
        let cli = Cli::try_parse_from(["memtrace", "reclaim", "--pid", "7", "-i", "2"]).unwrap();
        let Some(Command::Reclaim(args)) = cli.command else {
            panic!("no subcommand")
        };
        assert_eq!(
            (args.scope.pid, args.interval),
            (vec![7], Duration::from_secs(2))
        );
        let cli = Cli::try_parse_from(["memtrace", "--pid", "7"]).unwrap();
        assert!(cli.command.is_none());
        assert!(Cli::try_parse_from(["memtrace", "--json", "reclaim"]).is_err());
    }

    #[test]
    fn go_subcommand() {
        let cli = Cli::try_parse_from(["memtrace", "go", "--pid", "7", "--wait", "2.5", "--json"])
            .unwrap();
        let Some(Command::Go(args)) = cli.command else {
            panic!("not the go subcommand");
        };
        assert_eq!(args.pid, 7);
        assert_eq!(args.wait, Duration::from_millis(2500));
        assert!(args.json);
        let cli = Cli::try_parse_from(["memtrace", "go", "-p", "7"]).unwrap();
        let Some(Command::Go(args)) = cli.command else {
            panic!("not the go subcommand");
        };
        assert_eq!((args.wait, args.json), (Duration::from_secs(10), false));
        assert!(Cli::try_parse_from(["memtrace", "go"]).is_err());
        assert!(Cli::try_parse_from(["memtrace", "go", "--pid", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["memtrace", "--pid", "7"])
                .unwrap()
                .command
                .is_none()
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
