// A Go program that allocates a heap, drops it and returns it to the OS, so memtrace can see
// which madvise advice the Go runtime uses. Same protocol as memtrace-workload: it prints a
// ready line with its pid, waits for a line on stdin, releases, prints a record, then waits
// for another line (so a tracer can read its memory picture) before exiting.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"runtime/debug"
)

var sink [][]byte

func main() {
	mib := flag.Int("mib", 256, "heap to allocate and release, in MiB")
	flag.Parse()
	// Keep the GC from releasing early: all release happens on the go signal.
	debug.SetGCPercent(-1)
	for i := 0; i < *mib; i++ {
		chunk := make([]byte, 1<<20)
		for j := 0; j < len(chunk); j += 4096 {
			chunk[j] = 1
		}
		sink = append(sink, chunk)
	}
	in := bufio.NewReader(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	if _, err := in.ReadString('\n'); err != nil {
		os.Exit(1)
	}
	sink = nil
	debug.FreeOSMemory()
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	out.Encode(map[string]any{
		"pid":           os.Getpid(),
		"version":       runtime.Version(),
		"allocated":     *mib << 20,
		"heap_inuse":    stats.HeapInuse,
		"heap_released": stats.HeapReleased,
	})
	in.ReadString('\n')
}
