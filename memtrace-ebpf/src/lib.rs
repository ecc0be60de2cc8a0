#![no_std]
// The kernel programs live in the `memtrace` binary target (src/main.rs).
