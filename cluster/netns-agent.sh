#!/bin/sh
# plm_rsh_agent for Open MPI when "hosts" are network namespaces on this machine: mpirun calls
# `AGENT <host> <command...>` to start its daemon on a host; we run it inside that namespace.
# The namespaces share one file system and one host name, so daemons started at the same moment
# would race to create the same session directory (/tmp/ompi.<host name>.<uid>/jf.<job>, "File
# exists"): each "host" gets a session directory base of its own, which its processes inherit.
host=$1
shift
dir="${TMPDIR:-/tmp}/flamingo-netns-$host"
mkdir -p "$dir"
exec ip netns exec "$host" env OMPI_MCA_orte_tmpdir_base="$dir" /bin/sh -c "$*"
