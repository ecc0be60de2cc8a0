#!/vm/bin/sh
# PID 1 of memtrace's test guests (see xtask/src/vm). Mounts what the integration tests need,
# then runs the job found on the second disk: its steps one at a time, reporting on ttyS1, or
# an interactive shell on the console. ttyS1 carries nothing but this script's reports, so
# kernel messages (on the console, ttyS0) can never garble them. QEMU runs with -no-reboot:
# powering off, or a panic (also when this script dies), ends it.

PATH=/vm/bin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The kernel opens /dev/console for init only if it exists on the root filesystem, which has
# no device nodes: take the console now that devtmpfs provides it.
mount -t devtmpfs devtmpfs /dev || poweroff -f
exec </dev/console >/dev/console 2>&1

MARK=@@memtrace-vm@@
# Raw: no \n -> \r\n translation, no echo of anything QEMU might feed back.
stty -F /dev/ttyS1 raw -echo
exec 3>/dev/ttyS1

say() { echo "$MARK $*" >&3; }
die() {
	echo "memtrace-vm: $*"
	say error "$*"
	poweroff -f
}
must() { "$@" || die "init: '$*' failed"; }

mount_filesystems() {
	must mkdir -p /dev/pts /dev/shm
	must mount -t devpts -o mode=620,ptmxmode=666 devpts /dev/pts
	must mount -t tmpfs -o mode=1777 tmpfs /dev/shm
	must mount -t tmpfs -o mode=755 tmpfs /run
	must mount -t tracefs tracefs /sys/kernel/tracing
	must mount -t debugfs debugfs /sys/kernel/debug
	must mount -t bpf bpf /sys/fs/bpf
}

# The memory controller can be bound to one hierarchy only, so the job picks one.
mount_cgroups() {
	case "$CGROUP" in
	v2)
		must mount -t cgroup2 cgroup2 /sys/fs/cgroup
		must sh -c 'echo +memory > /sys/fs/cgroup/cgroup.subtree_control'
		;;
	v1)
		# The hybrid layout of systemd before v2 (and of the development machines): v1
		# controllers in a tmpfs, the v2 hierarchy without controllers in unified/.
		must mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
		must mkdir /sys/fs/cgroup/memory /sys/fs/cgroup/unified
		must mount -t cgroup -o memory cgroup /sys/fs/cgroup/memory
		must mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
		# Where memory.use_hierarchy still exists, systemd sets it; limits then nest.
		echo 1 >/sys/fs/cgroup/memory/memory.use_hierarchy 2>/dev/null
		;;
	*) die "init: unknown cgroup mode '$CGROUP'" ;;
	esac
}

# The job disk by its label: NVMe namespaces do not get stable names (6.12 scans them
# asynchronously).
mount_job() {
	waited=0
	until job=$(findfs LABEL=memtrace-job 2>/dev/null); do
		[ "$waited" -lt 100 ] || die "init: no disk labelled memtrace-job"
		sleep 0.1
		waited=$((waited + 1))
	done
	must mount -o ro "$job" /job
	. /job/config
}

# A kernel's headers, when the job brings them (see kernels.rs), where its linux-headers
# package would put them: /usr/src, and the build/source links in /lib/modules.
install_headers() {
	[ -d /job/headers ] || return 0
	must mkdir -p /usr/src /lib/modules
	for dir in /job/headers/usr/src/*; do
		must ln -s "$dir" /usr/src/
	done
	must cp -a /job/headers/lib/modules/. /lib/modules/
}

configure_system() {
	must ip link set lo up
	# Debian kernels default to "always", which changes fault counts; the development
	# machines use madvise.
	must sh -c 'echo madvise > /sys/kernel/mm/transparent_hugepage/enabled'
	hostname memtrace-vm
}

# Each step runs alone, with a time limit; what is left of it afterwards (a workload or a
# memtrace a failed test did not reap) is killed so it cannot disturb the next step.
run_steps() {
	for step in /job/steps/*; do
		[ -f "$step" ] || continue
		name=${step##*/}
		say start "$name"
		cd "$WORKDIR" || die "init: no $WORKDIR"
		timeout -s KILL "$STEP_TIMEOUT" /vm/bin/sh "$step" </dev/null >&3 2>&3
		status=$?
		cd /
		kill -KILL -1 2>/dev/null
		say end "$name" "$status"
	done
	say done
}

mount_filesystems
mount_job
mount_cgroups
install_headers
configure_system

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/vm/bin
export HOME=/root TMPDIR=/tmp CI=true RUST_BACKTRACE=1
say booted "$(uname -r)"

case "$MODE" in
steps) run_steps ;;
shell)
	cd "$WORKDIR" || cd /
	echo "memtrace-vm: $(uname -r), cgroup $CGROUP; 'poweroff -f' or Ctrl-A X leaves"
	setsid cttyhack sh -l
	;;
*) die "init: unknown mode '$MODE'" ;;
esac
sync
poweroff -f
