#!/usr/bin/env bash
# Runs the capacity benchmarks inside the documented minimum host of the
# connector: 2 cores at 1.6 GHz and 2 GiB of memory. The CPU quota is
# (1.6 GHz ÷ this machine's clock) per core for 2 cores, the memory limit
# 2 GiB (swap included), both through a cgroup (systemd-run --scope when
# systemd runs, else a cgroup directory made here and removed afterwards;
# cgroup v2 or v1, whichever the machine has), with GOMAXPROCS=2 and
# GOMEMLIMIT at 90 % of the limit, as the daemon takes. Without cgroups it
# sets GOMAXPROCS and GOMEMLIMIT alone and says so.
#
# The profile and the results go to bench/results/profile-<time>.txt; the
# header lines are benchfmt configuration lines ("key: value"), so
# benchstat shows them beside the numbers.
#
#   make bench-profile
#   BENCH='FullSync/devices=5000/' COUNT=5 bench/profile.sh
#   PROFILE_MHZ=2000 PROFILE_CORES=4 PROFILE_MEM_MIB=4096 bench/profile.sh
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
# The default set: the small full and quick syncs and the baseline at the
# zero profile (the connector's own cost, which the CPU quota slows), and
# the lab first sync with 8 runspaces (what Exchange's latency leaves).
BENCH=${BENCH:-'FullSync/devices=(1000|5000)/runspaces=8/profile=zero|FullSync/devices=1000/runspaces=8/profile=lab/sync=first|QuickSync/devices=5000/runspaces=8/profile=zero|Baseline/devices=1000/runspaces=8/profile=zero'}
COUNT=${COUNT:-1}
BENCHTIME=${BENCHTIME:-1s}
MHZ=${PROFILE_MHZ:-1600}
CORES=${PROFILE_CORES:-2}
MEM_MIB=${PROFILE_MEM_MIB:-2048}
PERIOD_US=100000

# This machine's clock: the highest frequency the CPU reports (sysfs
# cpufreq, kHz), else /proc/cpuinfo's "cpu MHz" (what a VM shows).
clock_mhz() {
	local f=/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq
	if [[ -r $f ]]; then
		echo $(($(cat "$f") / 1000))
		return
	fi
	awk -F: '/^cpu MHz/ { printf "%d\n", $2; exit }' /proc/cpuinfo
}
HOST_MHZ=$(clock_mhz)
if [[ -z $HOST_MHZ || $HOST_MHZ -le 0 ]]; then
	echo "profile: cannot read this machine's clock; assuming ${MHZ} MHz (no slow-down)" >&2
	HOST_MHZ=$MHZ
fi
# Per-core share, at most one core's worth; the quota covers CORES cores.
QUOTA_US=$(awk -v t="$MHZ" -v h="$HOST_MHZ" -v c="$CORES" -v p="$PERIOD_US" \
	'BEGIN { s = t / h; if (s > 1) s = 1; printf "%d\n", s * c * p }')
QUOTA_CORES=$(awk -v q="$QUOTA_US" -v p="$PERIOD_US" 'BEGIN { printf "%.3f\n", q / p }')
MEM_BYTES=$((MEM_MIB * 1024 * 1024))
GOMEMLIMIT_MIB=$((MEM_MIB * 9 / 10))

export GOMAXPROCS=$CORES
export GOMEMLIMIT=${GOMEMLIMIT_MIB}MiB

tmp=$(mktemp -d)
made=()
cleanup() {
	for d in "${made[@]}"; do
		rmdir "$d" 2>/dev/null || echo "profile: could not remove cgroup $d" >&2
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

# The test binary is built outside the limit: compiling is not what the
# profile measures.
"$GO" test -c -o "$tmp/bench.test" ./bench/

# own_cgroup CONTROLLER prints this shell's cgroup path for a v1
# controller, or the v2 path for "".
own_cgroup() {
	if [[ -z $1 ]]; then
		awk -F: '$1 == "0" && $2 == "" { print $3 }' /proc/self/cgroup
	else
		awk -F: -v c="$1" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3 }' /proc/self/cgroup
	fi
}

METHOD=none
VERSION=none
run=("$tmp/bench.test")
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
	VERSION=v2
elif [[ -d /sys/fs/cgroup/cpu && -d /sys/fs/cgroup/memory ]]; then
	VERSION=v1
fi
systemd_up() {
	command -v systemd-run >/dev/null && command -v systemctl >/dev/null &&
		systemctl is-system-running 2>/dev/null | grep -qE '^(running|degraded)'
}
if [[ $VERSION != none ]] && systemd_up; then
	pct=$(awk -v q="$QUOTA_US" -v p="$PERIOD_US" 'BEGIN { printf "%d\n", q * 100 / p }')
	memprop=MemoryMax
	[[ $VERSION == v1 ]] && memprop=MemoryLimit
	run=(systemd-run --scope --quiet --collect -p "CPUQuota=${pct}%" -p "${memprop}=${MEM_BYTES}" -p MemorySwapMax=0
		--setenv=GOMAXPROCS="$GOMAXPROCS" --setenv=GOMEMLIMIT="$GOMEMLIMIT" -- "$tmp/bench.test")
	METHOD="systemd-run --scope"
elif [[ $VERSION == v2 ]]; then
	parent=/sys/fs/cgroup$(own_cgroup "")
	dir=$parent/easconnector-bench-$$
	if mkdir "$dir" 2>/dev/null; then
		made+=("$dir")
		echo "+cpu +memory" >"$parent/cgroup.subtree_control" 2>/dev/null || true
		if echo "$QUOTA_US $PERIOD_US" >"$dir/cpu.max" 2>/dev/null && echo "$MEM_BYTES" >"$dir/memory.max" 2>/dev/null; then
			echo 0 >"$dir/memory.swap.max" 2>/dev/null || true
			run=(sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$dir" "$tmp/bench.test")
			METHOD="cgroup v2 directory $dir"
		fi
	fi
elif [[ $VERSION == v1 ]]; then
	cpu=/sys/fs/cgroup/cpu$(own_cgroup cpu)
	mem=/sys/fs/cgroup/memory$(own_cgroup memory)
	cpu=${cpu%/}/easconnector-bench-$$
	mem=${mem%/}/easconnector-bench-$$
	if mkdir "$cpu" 2>/dev/null && made+=("$cpu") && mkdir "$mem" 2>/dev/null && made+=("$mem"); then
		if echo "$PERIOD_US" >"$cpu/cpu.cfs_period_us" && echo "$QUOTA_US" >"$cpu/cpu.cfs_quota_us" &&
			echo "$MEM_BYTES" >"$mem/memory.limit_in_bytes"; then
			# Swap counts against the limit too where the kernel accounts it.
			[[ -f $mem/memory.memsw.limit_in_bytes ]] && echo "$MEM_BYTES" >"$mem/memory.memsw.limit_in_bytes" 2>/dev/null || true
			run=(sh -c 'echo $$ > "$1/cgroup.procs" && echo $$ > "$2/cgroup.procs" && shift 2 && exec "$@"' sh "$cpu" "$mem" "$tmp/bench.test")
			METHOD="cgroup v1 directories $cpu, $mem"
		fi
	fi
fi
if [[ $METHOD == none ]]; then
	echo "profile: cgroups unavailable (no permission or no cgroup file system): only GOMAXPROCS=$GOMAXPROCS and GOMEMLIMIT=$GOMEMLIMIT apply; the CPU is not slowed and memory not capped" >&2
	QUOTA_CORES="none (GOMAXPROCS only)"
fi

mkdir -p bench/results
out=bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ).txt
{
	echo "profile: ${CORES} cores at ${MHZ} MHz, ${MEM_MIB} MiB"
	echo "profile-method: $METHOD"
	echo "profile-cgroup: $VERSION"
	echo "profile-cpu-quota: ${QUOTA_US}us per ${PERIOD_US}us (${QUOTA_CORES} cores)"
	echo "profile-memory-limit: ${MEM_BYTES} bytes"
	echo "profile-host-clock: ${HOST_MHZ} MHz ($(awk -F: '/^model name/ { sub(/^ /, "", $2); print $2; exit }' /proc/cpuinfo), $(nproc) CPUs)"
	echo "profile-kernel: $(uname -sr)"
	echo "profile-go: $("$GO" env GOVERSION)"
	echo "profile-gomaxprocs: $GOMAXPROCS"
	echo "profile-gomemlimit: $GOMEMLIMIT"
	echo "profile-bench: $BENCH"
} | tee "$out"
echo "profile: results to $out" >&2
# Run from bench/, as go test would.
set +e
(cd bench && "${run[@]}" -test.run='^$' -test.bench="$BENCH" -test.benchmem -test.count="$COUNT" -test.benchtime="$BENCHTIME" -test.timeout=3h) 2>&1 | tee -a "$out"
status=${PIPESTATUS[0]}
set -e
# Proof that the quota bit: how often the kernel throttled the run.
for d in "${made[@]}"; do
	if [[ -f $d/cpu.stat ]]; then
		echo "profile-cpu-stat: $(tr '\n' ' ' <"$d/cpu.stat")" | tee -a "$out"
	fi
	if [[ -f $d/memory.max_usage_in_bytes ]]; then
		echo "profile-memory-peak: $(cat "$d/memory.max_usage_in_bytes") bytes" | tee -a "$out"
	elif [[ -f $d/memory.peak ]]; then
		echo "profile-memory-peak: $(cat "$d/memory.peak") bytes" | tee -a "$out"
	fi
done
exit "$status"
