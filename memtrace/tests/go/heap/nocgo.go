//go:build !cgo

package main

// cAllocate: without cgo there is no C memory.
func cAllocate() int { return 0 }
