#!/usr/bin/env bash
# A real multi-host launch on one machine: each "host" is a Linux network namespace (fh1..fhN)
# joined to a bridge by a veth pair, with an address in the benchmarking range 198.18.0.0/24 and
# a name in /etc/hosts. mpirun starts one rank per namespace through cluster/netns-agent.sh, and
# every rank-to-rank byte crosses TCP between namespaces. Needs root (ip netns). Everything made
# here is removed on exit.
#
#   cluster/netns-launch.sh [--rate RATE] [--mem-cap BYTES] HOSTS -- flamingo generate --model DIR ...
#
#   --rate RATE      shape each host's links with a token bucket (tc tbf) at RATE (tc syntax:
#                    1gbit, 500mbit, 10gbit; a bare number is bit/s), in both directions: the
#                    namespace's eth0 (what it sends) and the bridge-side veth (what it receives).
#                    No delay: this kernel has no netem; the transport adds a per-message delay
#                    from FLAMINGO_LINK_DELAY_US, passed to every rank when it is set.
#   --mem-cap BYTES  a cgroup v1 memory cgroup per host (flamingo-fhN, limit BYTES: 600M, 2G,
#                    1.5GiB, 2000000000), made under this script's own memory cgroup (so
#                    /sys/fs/cgroup/memory/flamingo-fhN from the root cgroup); every process
#                    started in host fhN (mpirun's daemon and its rank) runs in it, and page cache
#                    it faults in (mapped weights) is charged to it. At exit one line per host on
#                    stderr: peak memory against the cap, how often the limit was hit, OOM kills.
#
# FLAMINGO_LINK_DELAY_US and FLAMINGO_KERNELS are passed to every rank when set.
# Prints mpirun's output; exits with its status.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
usage="usage: netns-launch.sh [--rate RATE] [--mem-cap BYTES] [--cpu-cap HOST=FRACTION ...] HOSTS -- command..."
die() { echo "netns-launch: $*" >&2; exit 2; }

rate=""
memcap=""
cpucaps=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) [ $# -ge 2 ] || die "--rate needs a value"; rate=$2; shift 2 ;;
        --rate=*) rate=${1#--rate=}; shift ;;
        --mem-cap) [ $# -ge 2 ] || die "--mem-cap needs a value"; memcap=$2; shift 2 ;;
        --mem-cap=*) memcap=${1#--mem-cap=}; shift ;;
        --cpu-cap) [ $# -ge 2 ] || die "--cpu-cap needs HOST=FRACTION"; cpucaps+=("$2"); shift 2 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        --) die "$usage" ;;
        -*) die "unknown option '$1'; $usage" ;;
        *) break ;;
    esac
done
hosts=${1:?$usage}
shift
[ "${1:-}" = "--" ] && shift
case "$hosts" in ''|*[!0-9]*|0) die "HOSTS must be a positive number, got '$hosts'; $usage" ;; esac
[ $# -gt 0 ] || die "no command; $usage"

# Rate in bit/s from tc's syntax (bit, kbit, mbit, gbit, tbit; bps, kbps, ... are bytes/s).
rate_bits() {
    printf '%s\n' "$1" | awk '
        { s = tolower($0) }
        match(s, /^[0-9]+(\.[0-9]+)?/) {
            v = substr(s, 1, RLENGTH); u = substr(s, RLENGTH + 1)
            m["" ] = 1; m["bit"] = 1; m["kbit"] = 1e3; m["mbit"] = 1e6; m["gbit"] = 1e9; m["tbit"] = 1e12
            m["bps"] = 8; m["kbps"] = 8e3; m["mbps"] = 8e6; m["gbps"] = 8e9; m["tbps"] = 8e12
            if ((u in m) && v > 0) { printf "%.0f\n", v * m[u]; exit 0 }
        }
        { exit 1 }'
}
# Bytes from the sizes flamingo accepts (--mem-per-rank): 600M = 600 MiB, 2G, 1.5GiB, 2GB = 2e9, bare bytes.
size_bytes() {
    printf '%s\n' "$1" | awk '
        { s = tolower($0) }
        match(s, /^[0-9]+(\.[0-9]+)?/) {
            v = substr(s, 1, RLENGTH); u = substr(s, RLENGTH + 1)
            m[""] = 1; m["b"] = 1; m["k"] = 1024; m["kib"] = 1024; m["kb"] = 1e3
            m["m"] = 1048576; m["mib"] = 1048576; m["mb"] = 1e6
            m["g"] = 1073741824; m["gib"] = 1073741824; m["gb"] = 1e9
            if ((u in m) && v > 0) { printf "%.0f\n", v * m[u]; exit 0 }
        }
        { exit 1 }'
}

if [ -n "$rate" ]; then
    bits=$(rate_bits "$rate") || die "--rate: cannot read '$rate' (e.g. 1gbit, 500mbit)"
    burst=$(( bits / 8 / 250 ))          # 4 ms at the rate
    [ "$burst" -ge 32768 ] || burst=32768
fi
if [ -n "$memcap" ]; then
    capbytes=$(size_bytes "$memcap") || die "--mem-cap: cannot read '$memcap' (e.g. 600M, 2G)"
fi

[ "$(id -u)" -eq 0 ] || { echo "netns-launch: needs root (ip netns)" >&2; exit 1; }
command -v ip >/dev/null || { echo "netns-launch: needs iproute2" >&2; exit 1; }
# One launch at a time on this machine: the hosts, the bridge and the cgroups have fixed names
# (concurrent launches, e.g. parallel tests, wait here for the one before to clean up).
exec 9> /run/lock/flamingo-netns-launch.lock
flock 9
[ -z "$rate" ] || command -v tc >/dev/null || { echo "netns-launch: --rate needs tc (iproute2)" >&2; exit 1; }
cgparent=""
if [ -n "$memcap" ]; then
    cgroot=/sys/fs/cgroup/memory
    [ -f "$cgroot/cgroup.procs" ] && [ -f "$cgroot/memory.limit_in_bytes" ] \
        || { echo "netns-launch: --mem-cap needs the cgroup v1 memory controller at $cgroot" >&2; exit 1; }
    own=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
    cgparent="$cgroot${own%/}"
    [ -d "$cgparent" ] || { echo "netns-launch: cannot find own memory cgroup $cgparent" >&2; exit 1; }
fi

# --cpu-cap I=F: host fhI gets F of one core (a cgroup v1 cpu quota: F x 100 ms per 100 ms), a
# slower machine for experiments (e.g. a rank the planner should give less work).
cpuparent=""
if [ ${#cpucaps[@]} -gt 0 ]; then
    cpuroot=/sys/fs/cgroup/cpu
    [ -f "$cpuroot/cgroup.procs" ] || { echo "netns-launch: --cpu-cap needs the cgroup v1 cpu controller at $cpuroot" >&2; exit 1; }
    own=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3 }' /proc/self/cgroup)
    cpuparent="$cpuroot${own%/}"
    for c in "${cpucaps[@]}"; do
        case "$c" in [0-9]*=[0-9.]*) ;; *) die "--cpu-cap: '$c' is not HOST=FRACTION (e.g. 3=0.5)" ;; esac
        [ "${c%%=*}" -ge 1 ] && [ "${c%%=*}" -le "$hosts" ] || die "--cpu-cap: host ${c%%=*} is not one of 1..$hosts"
    done
fi
cpu_remove() {
    local cg=$cpuparent/flamingo-fh$1
    [ -d "$cg" ] || return 0
    local n=0; while [ -s "$cg/cgroup.procs" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    rmdir "$cg" 2>/dev/null || echo "netns-launch: could not remove cgroup $cg" >&2
}

bridge=fhbr0
tag="# flamingo-netns"
cg_of() { echo "$cgparent/flamingo-fh$1"; }
# Removes host i's memory cgroup once nothing runs in it (waits up to 10 s; then kills what is left,
# which can only be processes this launch started).
cg_remove() {
    local cg; cg=$(cg_of "$1")
    [ -d "$cg" ] || return 0
    local n=0
    while [ -s "$cg/cgroup.procs" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    if [ -s "$cg/cgroup.procs" ]; then
        echo "netns-launch: fh$1: killing processes still in $cg: $(tr '\n' ' ' < "$cg/cgroup.procs")" >&2
        while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$cg/cgroup.procs"
        n=0; while [ -s "$cg/cgroup.procs" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    fi
    rmdir "$cg" 2>/dev/null || echo "netns-launch: could not remove cgroup $cg" >&2
}
cleanup() {
    for i in $(seq 1 "$hosts"); do
        ip netns del "fh$i" 2>/dev/null || true
        ip link del "fhv$i" 2>/dev/null || true
        [ -z "$cgparent" ] || cg_remove "$i"
        [ -z "$cpuparent" ] || cpu_remove "$i"
    done
    ip link del "$bridge" 2>/dev/null || true
    if grep -q "$tag" /etc/hosts 2>/dev/null; then
        grep -v "$tag" /etc/hosts > /etc/hosts.flamingo-tmp && cat /etc/hosts.flamingo-tmp > /etc/hosts && rm -f /etc/hosts.flamingo-tmp
    fi
}
# One line per capped host: peak usage (memory.max_usage_in_bytes) against the cap, how often the
# limit was reached (memory.failcnt: each time the kernel had to reclaim, e.g. drop page cache),
# OOM kills (memory.oom_control: oom_kill), and how much file data (mapped weights) was dropped
# and then faulted in again (memory.stat workingset_refault_file): clean mapped weights are
# reclaimable, so a host whose weights do not fit thrashes (re-reads them) rather than being killed.
report_memory() {
    [ -n "$cgparent" ] || return 0
    local i cg peak fail kills refault
    for i in $(seq 1 "$hosts"); do
        cg=$(cg_of "$i")
        [ -f "$cg/memory.max_usage_in_bytes" ] || continue
        # Let the last processes exit first, so that their OOM kills are counted.
        local n=0; while [ -s "$cg/cgroup.procs" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
        peak=$(cat "$cg/memory.max_usage_in_bytes")
        fail=$(cat "$cg/memory.failcnt")
        kills=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.oom_control")
        refault=$(awk '$1 == "workingset_refault_file" { printf "%d", $2 * 4096 / 1048576 }' "$cg/memory.stat")
        echo "netns-launch: fh$i peak memory $(( peak / 1048576 )) MiB of cap $(( capbytes / 1048576 )) MiB;" \
             "limit reached ${fail} times; OOM kills: ${kills:-unknown}; file pages evicted and read again: ${refault:-?} MiB" >&2
    done
}
on_exit() { status=$?; set +e; report_memory; cleanup; exit $status; }
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cleanup

ip link add "$bridge" type bridge
ip addr add 198.18.0.1/24 dev "$bridge"
ip link set "$bridge" up
for i in $(seq 1 "$hosts"); do
    ns="fh$i"
    ip netns add "$ns"
    ip link add "fhv$i" type veth peer name eth0 netns "$ns"
    ip link set "fhv$i" master "$bridge" up
    ip -n "$ns" addr add "198.18.0.1$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    if [ -n "$rate" ]; then
        # Egress of the host (its eth0) and of the bridge towards it (its veth): both directions.
        ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 50ms
        tc qdisc add dev "fhv$i" root tbf rate "$rate" burst "$burst" latency 50ms
    fi
    if [ -n "$cgparent" ]; then
        cg=$(cg_of "$i")
        mkdir "$cg"
        echo "$capbytes" > "$cg/memory.limit_in_bytes"
    fi
    echo "198.18.0.1$i $ns $tag" >> /etc/hosts
done
for c in "${cpucaps[@]}"; do
    cg=$cpuparent/flamingo-fh${c%%=*}
    mkdir -p "$cg"
    echo 100000 > "$cg/cpu.cfs_period_us"
    awk -v f="${c#*=}" 'BEGIN { printf "%d\n", f * 100000 }' > "$cg/cpu.cfs_quota_us"
done
if [ -n "$cpuparent" ]; then export FLAMINGO_NETNS_CPU_PARENT="$cpuparent"; else unset FLAMINGO_NETNS_CPU_PARENT; fi
# netns-agent.sh puts what it starts in host fhN into $FLAMINGO_NETNS_CGROUP_PARENT/flamingo-fhN.
if [ -n "$cgparent" ]; then export FLAMINGO_NETNS_CGROUP_PARENT="$cgparent"; else unset FLAMINGO_NETNS_CGROUP_PARENT; fi

pass=(-x OPENBLAS_CORETYPE -x PATH)
[ -z "${FLAMINGO_LINK_DELAY_US+set}" ] || pass+=(-x FLAMINGO_LINK_DELAY_US)
[ -z "${FLAMINGO_KERNELS+set}" ] || pass+=(-x FLAMINGO_KERNELS)

hostlist=$(seq -s, -f "fh%g" 1 "$hosts")
set +e
mpirun --host "$hostlist" -np "$hosts" --oversubscribe \
    --mca plm_rsh_agent "$here/netns-agent.sh" \
    --mca btl tcp,self --mca btl_tcp_if_include 198.18.0.0/24 --mca oob_tcp_if_include 198.18.0.0/24 \
    "${pass[@]}" \
    "$@"
status=$?
set -e
exit $status
