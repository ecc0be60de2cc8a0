/*
 * A workload for `memtrace --stacks` (memtrace/tests/stacks.rs): it releases and maps memory
 * from distinct, named functions, a known number of times each, and prints a record of what
 * each function did. memtrace/build.rs builds it with frame pointers (and a stripped copy).
 *
 * Protocol, as memtrace-workload's: prints {"ready":true,"pid":N}, waits for a line on stdin,
 * does its work, prints its record, and exits on another line (the test lets memtrace read its
 * memory map first, while it lives; memtrace names the frames after it exited).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096

/* Through libc's madvise wrapper, which makes the system call without a frame. */
__attribute__((noinline)) int release_dontneed(char *p, size_t len) {
	return madvise(p, len, MADV_DONTNEED);
}

__attribute__((noinline)) int release_free(char *p, size_t len) {
	return madvise(p, len, MADV_FREE);
}

__attribute__((noinline)) char *map_anon(size_t len) {
	return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

__attribute__((noinline)) int unmap_region(char *p, size_t len) {
	return munmap(p, len);
}

/* Through libc's generic syscall(), frameless too. */
__attribute__((noinline)) char *grow_by_syscall(char *p, size_t old_len, size_t new_len) {
	return (char *)syscall(SYS_mremap, p, old_len, new_len, MREMAP_MAYMOVE);
}

/* Through libc's mremap, which moves the stack pointer without a frame pointer before its
 * system call: the walk cannot find its caller, and memtrace must say so. */
__attribute__((noinline)) char *grow_by_libc(char *p, size_t old_len, size_t new_len) {
	return mremap(p, old_len, new_len, MREMAP_MAYMOVE);
}

/* A call that fails: MADV_FREE on a shared mapping is EINVAL. */
__attribute__((noinline)) int release_shared(char *p, size_t len) {
	return madvise(p, len, MADV_FREE);
}

static void touch(char *p, size_t len) {
	for (size_t i = 0; i < len; i += PAGE)
		p[i] = 1;
}

int main(void) {
	enum { DONTNEED_CALLS = 3, FREE_CALLS = 5, MAP_CALLS = 4 };
	const size_t dontneed_len = 2 * PAGE + 1, free_len = PAGE, map_len = 4 * PAGE;
	char line[64];

	char *heap = mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char *moved = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *moved2 = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (heap == MAP_FAILED || shared == MAP_FAILED || moved == MAP_FAILED || moved2 == MAP_FAILED)
		return 1;
	printf("{\"ready\":true,\"pid\":%d}\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 1;

	for (int i = 0; i < DONTNEED_CALLS; i++) {
		touch(heap, dontneed_len);
		if (release_dontneed(heap, dontneed_len) != 0)
			return 1;
	}
	for (int i = 0; i < FREE_CALLS; i++) {
		touch(heap + 16 * PAGE, free_len);
		if (release_free(heap + 16 * PAGE, free_len) != 0)
			return 1;
	}
	for (int i = 0; i < MAP_CALLS; i++) {
		char *p = map_anon(map_len);
		if (p == MAP_FAILED)
			return 1;
		touch(p, map_len);
		if (unmap_region(p, map_len) != 0)
			return 1;
	}
	if (release_shared(shared, PAGE) == 0)
		return 1;
	if (grow_by_syscall(moved, PAGE, 3 * PAGE) == MAP_FAILED)
		return 1;
	if (grow_by_libc(moved2, PAGE, 2 * PAGE) == MAP_FAILED)
		return 1;

	/* Page-rounded as the kernel does: 2 pages + 1 byte covers 3 pages. */
	printf("{\"pid\":%d,\"calls\":["
	       "{\"function\":\"release_dontneed\",\"call\":\"madvise\",\"detail\":\"DONTNEED\",\"calls\":%d,\"failed\":0,\"bytes\":%d},"
	       "{\"function\":\"release_free\",\"call\":\"madvise\",\"detail\":\"FREE\",\"calls\":%d,\"failed\":0,\"bytes\":%d},"
	       "{\"function\":\"map_anon\",\"call\":\"mmap\",\"detail\":null,\"calls\":%d,\"failed\":0,\"bytes\":%d},"
	       "{\"function\":\"unmap_region\",\"call\":\"munmap\",\"detail\":null,\"calls\":%d,\"failed\":0,\"bytes\":%d},"
	       "{\"function\":\"release_shared\",\"call\":\"madvise\",\"detail\":\"FREE\",\"calls\":1,\"failed\":1,\"bytes\":0},"
	       "{\"function\":\"grow_by_syscall\",\"call\":\"mremap\",\"detail\":\"grow\",\"calls\":1,\"failed\":0,\"bytes\":%d}"
	       "],\"grow_by_libc\":{\"call\":\"mremap\",\"detail\":\"grow\",\"calls\":1,\"bytes\":%d}}\n",
	       getpid(), DONTNEED_CALLS, DONTNEED_CALLS * 3 * PAGE, FREE_CALLS, FREE_CALLS * PAGE,
	       MAP_CALLS, MAP_CALLS * (int)map_len, MAP_CALLS, MAP_CALLS * (int)map_len, 2 * PAGE, PAGE);
	fflush(stdout);
	return fgets(line, sizeof line, stdin) ? 0 : 1;
}
