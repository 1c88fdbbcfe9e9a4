#!/bin/sh
# plm_rsh_agent for Open MPI when "hosts" are network namespaces on this machine: mpirun calls
# `AGENT <host> <command...>` to start its daemon on a host; we run it inside that namespace.
host=$1
shift
exec ip netns exec "$host" /bin/sh -c "$*"
