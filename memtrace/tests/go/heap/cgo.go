//go:build cgo

package main

/*
#include <stdlib.h>
#include <string.h>

// 32 MiB of C heap, written so it is resident: memory the Go runtime never accounts for.
static void *hold(size_t size) {
	char *p = malloc(size);
	if (p) memset(p, 1, size);
	return p;
}
*/
import "C"

const cMiB = 32

// cAllocate holds cMiB MiB of C heap for the life of the program.
func cAllocate() int {
	if C.hold(cMiB<<20) == nil {
		return 0
	}
	return cMiB
}
