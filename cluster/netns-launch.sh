#!/usr/bin/env bash
# A real multi-host launch on one machine: each "host" is a Linux network namespace (fh1..fhN)
# joined to a bridge by a veth pair, with an address in the benchmarking range 198.18.0.0/24 and
# a name in /etc/hosts. mpirun starts one rank per namespace through cluster/netns-agent.sh, and
# every rank-to-rank byte crosses TCP between namespaces. Needs root (ip netns). Everything made
# here is removed on exit.
#
#   cluster/netns-launch.sh HOSTS -- flamingo generate --model DIR ...
#
# Prints mpirun's output; exits with its status.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
hosts=${1:?usage: netns-launch.sh HOSTS -- command...}
shift
[ "${1:-}" = "--" ] && shift
[ "$(id -u)" -eq 0 ] || { echo "netns-launch: needs root (ip netns)" >&2; exit 1; }
command -v ip >/dev/null || { echo "netns-launch: needs iproute2" >&2; exit 1; }

bridge=fhbr0
tag="# flamingo-netns"
cleanup() {
    for i in $(seq 1 "$hosts"); do
        ip netns del "fh$i" 2>/dev/null || true
        ip link del "fhv$i" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    if grep -q "$tag" /etc/hosts 2>/dev/null; then
        grep -v "$tag" /etc/hosts > /etc/hosts.flamingo-tmp && cat /etc/hosts.flamingo-tmp > /etc/hosts && rm -f /etc/hosts.flamingo-tmp
    fi
}
trap cleanup EXIT
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
    echo "198.18.0.1$i $ns $tag" >> /etc/hosts
done

hostlist=$(seq -s, -f "fh%g" 1 "$hosts")
set +e
mpirun --host "$hostlist" -np "$hosts" --oversubscribe \
    --mca plm_rsh_agent "$here/netns-agent.sh" \
    --mca btl tcp,self --mca btl_tcp_if_include 198.18.0.0/24 --mca oob_tcp_if_include 198.18.0.0/24 \
    -x OPENBLAS_CORETYPE -x PATH \
    "$@"
status=$?
set -e
exit $status
