#!/bin/sh
# plm_rsh_agent for Open MPI when "hosts" are network namespaces on this machine: mpirun calls
# `AGENT <host> <command...>` to start its daemon on a host; we run it inside that namespace.
# The namespaces share one file system and one host name, so daemons started at the same moment
# would race to create the same session directory (/tmp/ompi.<host name>.<uid>/jf.<job>, "File
# exists"): each "host" gets a session directory base of its own, which its processes inherit.
# With netns-launch.sh --mem-cap, FLAMINGO_NETNS_CGROUP_PARENT names the directory holding one
# memory cgroup per host (flamingo-<host>): this shell joins it before exec, so the daemon and
# everything it starts (the rank) are charged to, and limited by, that host's cgroup.
host=$1
shift
dir="${TMPDIR:-/tmp}/flamingo-netns-$host"
mkdir -p "$dir"
if [ -n "${FLAMINGO_NETNS_CGROUP_PARENT:-}" ]; then
    cg="$FLAMINGO_NETNS_CGROUP_PARENT/flamingo-$host"
    echo $$ > "$cg/cgroup.procs" || { echo "netns-agent: cannot join memory cgroup $cg" >&2; exit 1; }
fi
# With --cpu-cap, FLAMINGO_NETNS_CPU_PARENT holds a cpu cgroup per capped host: join it too.
if [ -n "${FLAMINGO_NETNS_CPU_PARENT:-}" ] && [ -d "$FLAMINGO_NETNS_CPU_PARENT/flamingo-$host" ]; then
    echo $$ > "$FLAMINGO_NETNS_CPU_PARENT/flamingo-$host/cgroup.procs" || { echo "netns-agent: cannot join cpu cgroup" >&2; exit 1; }
fi
# `ip netns exec` gives the namespace a fresh /sys without the cgroup mounts: mount the memory
# controller again there (in the namespace's own mount namespace), so a rank sees its host's limit
# at /sys/fs/cgroup/memory as it would on a real host, container or Slurm node.
remount=""
if [ -n "${FLAMINGO_NETNS_CGROUP_PARENT:-}" ]; then
    remount='mount -t tmpfs cgroup_root /sys/fs/cgroup && mkdir -p /sys/fs/cgroup/memory && mount -t cgroup -o memory memory /sys/fs/cgroup/memory && '
fi
exec ip netns exec "$host" env OMPI_MCA_orte_tmpdir_base="$dir" /bin/sh -c "$remount$*"
