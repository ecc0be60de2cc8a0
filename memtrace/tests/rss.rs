//! RSS: pages a process released with MADV_FREE, taken from it by memory-cgroup reclaim that
//! another process caused, are attributed to it as an external drop.

mod support;

use std::io::Write as _;

use support::{MemCgroup, Memtrace, Workload, privileged};

#[test]
#[ignore = "loads eBPF: needs root (`sudo -E cargo xtask test` runs it)"]
fn lazyfree_pages_reclaimed_under_cgroup_pressure_are_an_external_drop() {
    if !privileged() {
        return;
    }
    let Some(cgroup) = MemCgroup::new("rss", 200 << 20) else {
        return;
    };
    let mut lazy = Workload::spawn_in_cgroup(&cgroup.path, &["lazyfree", "--mib", "150"]);
    let memtrace = Memtrace::attach(&["--pid", &lazy.pid.to_string()]);
    let mut stdin = lazy.go_keeping_stdin();
    let freed = lazy.next_line();
    assert_eq!(freed["freed"], 150 << 20);

    // Another process in the same cgroup allocates past the limit: memcg reclaim takes the
    // lazily freed pages (no swap here, and they need none).
    let pressure =
        Workload::spawn_in_cgroup(&cgroup.path, &["--no-wait", "faults", "--pages", "38400"]);
    pressure.record();
    // memtrace stops while the workload still runs: its final sample reads smaps_rollup after
    // the reclaim (no sleep waiting for a periodic one). Nothing reclaims after the pressure
    // exited, so the workload's own count below sees the same pages.
    memtrace.interrupt();
    let output = memtrace.finish();
    stdin.write_all(b"count\n").expect("signal workload");
    let record = lazy.record();
    assert!(output.status.success(), "{}", output.stderr);

    let reclaimed = record["zero_pages"].as_u64().unwrap() * 4096;
    assert!(
        reclaimed > 50 << 20,
        "pressure should reclaim most of the lazily freed memory: {record}"
    );
    let process = output.process(record["pid"].as_u64().unwrap() as u32);
    let external = process["rss"]["external_drop"]["anon"].as_u64().unwrap();
    // The kernel's RSS counters are per-CPU batched (percpu_counter, batch 32 pages per CPU):
    // rss_stat reports each value to within that batch, so the drop matches to within it.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let slack = 2 * 32 * cpus * 4096;
    assert!(
        external.abs_diff(reclaimed) <= slack,
        "external anon drop {external} vs reclaimed {reclaimed} (±{slack}); withheld: {}",
        output.summary()["rss_taken_withheld"]
    );
    // smaps_rollup, a page-table walk, shows what stays lazily freed: all that was not
    // reclaimed, but for pages still waiting in a per-CPU LRU batch (at most 31 per CPU), not
    // yet marked lazy-free and so neither reclaimable nor counted.
    let lazy_free = process["smaps_rollup"]["last"]["lazy_free"]
        .as_u64()
        .unwrap();
    let not_reclaimed = (150 << 20) - reclaimed;
    assert!(
        lazy_free <= not_reclaimed && not_reclaimed - lazy_free <= 31 * cpus * 4096,
        "LazyFree {lazy_free} vs not reclaimed {not_reclaimed}"
    );
}
