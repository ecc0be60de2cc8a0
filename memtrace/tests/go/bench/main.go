// A mixed Go workload for `cargo xtask bench`: each round allocates a heap of small and large
// objects, touches it, drops it, runs the GC and returns the memory to the OS
// (debug.FreeOSMemory), so the runtime mmaps, faults and madvises the way a real Go service does.
// Same protocol as memtrace-workload: a ready line with the pid, then (unless -no-wait) a line on
// stdin before the measured loop, then one JSON record with the loop's wall time.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"
)

var sink [][]byte

func main() {
	rounds := flag.Int("rounds", 40, "allocate/drop/GC rounds")
	mib := flag.Int("mib", 64, "MiB allocated per round")
	noWait := flag.Bool("no-wait", false, "start at once instead of waiting for a line on stdin")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	if !*noWait {
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			os.Exit(1)
		}
	}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	cpuBefore := cpuNanos()
	started := time.Now()
	for r := 0; r < *rounds; r++ {
		// Half the bytes in 1 MiB chunks, half in 4 KiB objects.
		for i := 0; i < *mib/2; i++ {
			chunk := make([]byte, 1<<20)
			for j := 0; j < len(chunk); j += 4096 {
				chunk[j] = byte(r)
			}
			sink = append(sink, chunk)
		}
		for i := 0; i < *mib*128; i++ {
			small := make([]byte, 4096)
			small[0] = byte(i)
			sink = append(sink, small)
		}
		sink = nil
		runtime.GC()
		debug.FreeOSMemory()
	}
	wall := time.Since(started)
	cpu := cpuNanos() - cpuBefore
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	out.Encode(map[string]any{
		"pid":      os.Getpid(),
		"workload": "go-mixed",
		"ops":      *rounds,
		"wall_ns":  wall.Nanoseconds(),
		"cpu_ns":   cpu,
		"version":  runtime.Version(),
		"num_gc":   after.NumGC - before.NumGC,
		"detail":   map[string]any{"mib_per_round": *mib},
	})
}

// cpuNanos is the process's user + system CPU time (all threads, the GC's included).
func cpuNanos() int64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return usage.Utime.Nano() + usage.Stime.Nano()
}
