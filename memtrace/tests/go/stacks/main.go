// A Go program that releases its heap from one named function through debug.FreeOSMemory(),
// for `memtrace --stacks` (memtrace/tests/stacks.rs). Same protocol as memtrace-workload: a
// ready line with its pid, a line on stdin to release, a record, another line to exit.
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"runtime"
	"runtime/debug"
)

var sink [][]byte

// releaseFromHere is the function memtrace must find in the release's stacks. It stays on
// one thread, so the test's independent count (bpftrace, between this function's entry and
// releaseDone's, on this thread) sees exactly the calls it makes.
//
//go:noinline
func releaseFromHere() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	debug.FreeOSMemory()
	releaseDone()
}

// releaseDone marks the end of releaseFromHere's work for the test's count.
//
//go:noinline
func releaseDone() {}

func main() {
	// Keep the GC from releasing early: all release happens on the go signal.
	debug.SetGCPercent(-1)
	for i := 0; i < 64; i++ {
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
	releaseFromHere()
	out.Encode(map[string]any{"pid": os.Getpid(), "version": runtime.Version()})
	in.ReadString('\n')
}
