module memtrace.dev/xtask/layouts

go 1.19
