//! `cargo xtask bench --guest KERNEL`: memtrace's syscall programs on BPF trampolines against
//! the same programs on tracepoints, in one Debian guest under QEMU. This host refuses
//! trampolines, so a guest is where the two meet. TCG emulates the CPU, so its times are not
//! real times: the section reports ratios within the guest and whether every call was counted,
//! and sets no budget.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{
    stats::median,
    vm::{self, GuestKernel},
};

/// The configurations, in the order each iteration runs them.
const CONFIGS: [(&str, &str); 3] = [
    ("untraced", ""),
    ("trampolines", ""),
    ("tracepoints", "--bench-tracepoints-only"),
];

/// The workloads: a name, their arguments, and the count that memtrace must equal.
const WORKLOADS: [(&str, &str, Counted); 3] = [
    (
        "madvise-heavy",
        "bench-madvise --calls 20000",
        Counted::Dontneed,
    ),
    ("mmap-churn", "bench-mmap --rounds 5000", Counted::Munmap),
    (
        "other-syscalls",
        "bench-syscalls --calls 200000",
        Counted::Nothing,
    ),
];

/// What a workload's `ops` must equal in memtrace's entry for it.
#[derive(Clone, Copy)]
enum Counted {
    /// Successful MADV_DONTNEED calls (advice 4).
    Dontneed,
    /// munmap calls: one per round, plus the few the workload's runtime makes as it starts
    /// (a system-wide trace sees those too), which must be the same in every traced run.
    Munmap,
    /// Nothing: the workload makes no call memtrace traces (only its cost is of interest).
    Nothing,
}

impl Counted {
    fn in_entry(self, process: &Value) -> Option<u64> {
        match self {
            Self::Dontneed => process["madvise"]
                .as_array()?
                .iter()
                .find(|a| a["advice"] == 4)
                .and_then(|a| a["calls"].as_u64()),
            Self::Munmap => process["mappings"]["munmap"]["calls"].as_u64(),
            Self::Nothing => None,
        }
    }
}

/// The script the guest runs: for each iteration, configuration and workload, one line
/// `BENCH <config> <workload> <record>` and, when traced, `START <start line>` and
/// `SUMMARY <summary line>` (the guest has no JSON tool; the host picks the workload's entry). memtrace traces every process and is
/// stopped with SIGINT once the workload is done, as a user would.
fn script(release: &Path, iterations: usize) -> String {
    let workload = release.join("memtrace-workload");
    let memtrace = release.join("memtrace");
    let mut script = format!(
        "set -u\nW={}\nM={}\n\
         run() {{\n  config=$1; flag=$2; name=$3; shift 3\n  if [ \"$config\" = untraced ]; then\n    \
         \"$W\" \"$@\" --no-wait > /tmp/record\n  else\n    \
         rm -f /tmp/trace.err\n    \"$M\" --json $flag > /tmp/trace 2> /tmp/trace.err &\n    tracer=$!\n    tries=0\n    \
         until grep -qs attached /tmp/trace.err; do\n      tries=$((tries+1)); \
         [ $tries -gt 1200 ] && {{ cat /tmp/trace.err; exit 1; }}; sleep 0.05\n    done\n    \
         \"$W\" \"$@\" --no-wait > /tmp/record\n    kill -INT $tracer; wait $tracer\n  fi\n  \
         record=$(tail -n 1 /tmp/record)\n  echo \"BENCH $config $name $record\"\n  \
         if [ \"$config\" != untraced ]; then\n    echo \"START $(head -n 1 /tmp/trace)\"\n    \
         echo \"SUMMARY $(tail -n 1 /tmp/trace)\"\n  fi\n}}\n",
        workload.display(),
        memtrace.display()
    );
    for _ in 0..iterations {
        for (config, flag) in CONFIGS {
            for (name, args, _) in WORKLOADS {
                let _ = writeln!(script, "run {config} '{flag}' {name} {args}");
            }
        }
    }
    script
}

/// One traced or untraced run, as the guest printed it.
struct GuestRun {
    wall_ns: u64,
    ops: u64,
    /// The start line's `syscall_hooks` and the count memtrace gave, when traced.
    traced: Option<(String, Option<u64>)>,
}

/// Runs the comparison in `kernel`'s guest and returns the Markdown section.
pub fn run(
    kernel: &'static GuestKernel,
    release: &Path,
    iterations: usize,
) -> anyhow::Result<String> {
    let script_path = release.join("guest-bench.sh");
    std::fs::write(&script_path, script(release, iterations))
        .context("cannot write the guest script")?;
    let with = [
        script_path.clone(),
        release.join("memtrace"),
        release.join("memtrace-workload"),
    ];
    let (status, output) = vm::capture(kernel, &with, &format!("sh {}", script_path.display()))?;
    if status != 0 {
        bail!("the guest script failed ({status}):\n{output}");
    }
    let runs = parse(&output)?;
    Ok(render(kernel, iterations, &runs))
}

fn parse(output: &str) -> anyhow::Result<BTreeMap<(String, String), Vec<GuestRun>>> {
    let mut runs: BTreeMap<(String, String), Vec<GuestRun>> = BTreeMap::new();
    let mut lines = output.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("BENCH ") else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        let (Some(config), Some(name), Some(record)) = (words.next(), words.next(), words.next())
        else {
            bail!("malformed line from the guest: {line}");
        };
        let record: Value = serde_json::from_str(record).context("a workload record")?;
        let field = |key: &str| record[key].as_u64().context("a record field");
        let traced = match lines.peek().and_then(|l| l.strip_prefix("START ")) {
            Some(start) => {
                let start: Value = serde_json::from_str(start).context("memtrace's start line")?;
                lines.next();
                let summary = lines
                    .next()
                    .and_then(|l| l.strip_prefix("SUMMARY "))
                    .context("memtrace's summary line")?;
                let summary: Value = serde_json::from_str(summary).context("the summary")?;
                let entry = summary["processes"]
                    .as_array()
                    .and_then(|list| list.iter().find(|p| p["pid"] == record["pid"]));
                let counted = WORKLOADS
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .zip(entry)
                    .and_then(|((_, _, counted), entry)| counted.in_entry(entry));
                let hooks = start["syscall_hooks"].as_str().unwrap_or("?").to_owned();
                Some((hooks, counted))
            }
            None => None,
        };
        runs.entry((name.to_owned(), config.to_owned()))
            .or_default()
            .push(GuestRun {
                wall_ns: field("wall_ns")?,
                ops: field("ops")?,
                traced,
            });
    }
    if runs.is_empty() {
        bail!("the guest printed no results:\n{output}");
    }
    Ok(runs)
}

fn render(
    kernel: &GuestKernel,
    iterations: usize,
    runs: &BTreeMap<(String, String), Vec<GuestRun>>,
) -> String {
    let mut out = format!(
        "### Trampolines against tracepoints in a {} guest\n\n\
         `cargo xtask bench --guest {}` — {iterations} iteration(s), system-wide memtrace \
         stopped with SIGINT after each workload; medians. Under TCG the guest's times are not \
         real times, so only ratios within the guest are shown and no budget applies. \
         **exact** compares the count memtrace reported for the workload with the workload's \
         own, in every traced run of both kinds: DONTNEED calls, and munmap calls (one per \
         round, plus any the workload's runtime makes as it starts, seen system-wide).\n\n\
         | workload | configuration | hooks used | × untraced | × tracepoints | exact |\n\
         |---|---|---|---:|---:|---|\n",
        kernel.name, kernel.name
    );
    for (name, _, counted) in WORKLOADS {
        let wall = |config: &str| {
            runs.get(&(name.to_owned(), config.to_owned()))
                .map(|r| median(&mut r.iter().map(|s| s.wall_ns as f64).collect::<Vec<_>>()))
        };
        let (Some(untraced), Some(tracepoints)) = (wall("untraced"), wall("tracepoints")) else {
            continue;
        };
        for (config, _) in CONFIGS.iter().skip(1) {
            let Some(samples) = runs.get(&(name.to_owned(), (*config).to_owned())) else {
                continue;
            };
            let time = median(&mut samples.iter().map(|s| s.wall_ns as f64).collect::<Vec<_>>());
            let hooks: Vec<&str> = samples
                .iter()
                .filter_map(|s| s.traced.as_ref().map(|(h, _)| h.as_str()))
                .collect();
            let hooks = hooks.first().copied().unwrap_or("?");
            // Counted minus the workload's own count, in every traced run of this workload.
            let extra: Vec<Option<i64>> = runs
                .iter()
                .filter(|((n, c), _)| n == name && c != "untraced")
                .flat_map(|(_, samples)| samples)
                .map(|s| {
                    let counted = s.traced.as_ref()?.1?;
                    Some(i64::try_from(counted).ok()? - i64::try_from(s.ops).ok()?)
                })
                .collect();
            let exact = match extra.first() {
                _ if matches!(counted, Counted::Nothing) => "—".to_owned(),
                Some(Some(first)) if extra.iter().all(|e| *e == Some(*first)) => match first {
                    0 => "yes".to_owned(),
                    n if *n > 0 => format!("yes, +{n} from the runtime's start in every run"),
                    n => format!("NO: {n}"),
                },
                _ => format!("NO: {extra:?}"),
            };
            let _ = writeln!(
                out,
                "| {name} | {config} | {hooks} | {:.2}× | {:.2}× | {} |",
                time / untraced,
                time / tracepoints,
                exact
            );
        }
    }
    out
}
