// A Go program whose runtime memtrace reads from outside, with the runtime's own record of the
// same figures to compare against. It allocates a kept set and a dropped set of heap, returns
// the dropped set to the OS (debug.FreeOSMemory: MADV_DONTNEED, or MADV_FREE under
// GODEBUG=madvdontneed=0), parks some goroutines (stacks), then answers lines on stdin:
// "stats" prints runtime.ReadMemStats (taken just before and just after memtrace reads),
// anything else exits. The GC is off, so nothing changes between two records but what printing
// them allocates. Built with cgo, it also holds C memory the Go runtime never sees (cgo.go).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"runtime/debug"
)

var kept, dropped [][]byte

func main() {
	keepMiB := flag.Int("keep-mib", 64, "heap kept, in MiB")
	dropMiB := flag.Int("drop-mib", 64, "heap allocated, dropped and returned to the OS, in MiB")
	goroutines := flag.Int("goroutines", 200, "goroutines parked for the run (their stacks)")
	flag.Parse()
	debug.SetGCPercent(-1)
	kept = allocate(*keepMiB)
	dropped = allocate(*dropMiB)
	park := make(chan struct{})
	for i := 0; i < *goroutines; i++ {
		go func() { <-park }()
	}
	dropped = nil
	debug.FreeOSMemory()
	cMiB := cAllocate()
	in := bufio.NewReader(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{
		"ready":   true,
		"pid":     os.Getpid(),
		"version": runtime.Version(),
		"c_mib":   cMiB,
	})
	for {
		line, err := in.ReadString('\n')
		if err != nil || line != "stats\n" {
			close(park)
			return
		}
		var s runtime.MemStats
		runtime.ReadMemStats(&s)
		out.Encode(map[string]any{
			"heap_inuse":    s.HeapInuse,
			"heap_idle":     s.HeapIdle,
			"heap_released": s.HeapReleased,
			"heap_sys":      s.HeapSys,
			"stack_inuse":   s.StackInuse,
			"stack_sys":     s.StackSys,
			"mspan_inuse":   s.MSpanInuse,
			"mspan_sys":     s.MSpanSys,
			"mcache_inuse":  s.MCacheInuse,
			"mcache_sys":    s.MCacheSys,
			"buck_hash_sys": s.BuckHashSys,
			"gc_sys":        s.GCSys,
			"other_sys":     s.OtherSys,
			"sys":           s.Sys,
			"heap_alloc":    s.HeapAlloc,
			"next_gc":       s.NextGC,
			"num_gc":        s.NumGC,
		})
	}
}

// allocate returns mib MiB of heap in 1 MiB chunks, every page touched.
func allocate(mib int) [][]byte {
	chunks := make([][]byte, 0, mib)
	for i := 0; i < mib; i++ {
		chunk := make([]byte, 1<<20)
		for j := 0; j < len(chunk); j += 4096 {
			chunk[j] = 1
		}
		chunks = append(chunks, chunk)
	}
	return chunks
}
