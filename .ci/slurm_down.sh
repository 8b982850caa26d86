#!/usr/bin/env bash
# Stop the SLURM daemons that .ci/slurm_up.sh started (by the pids it recorded), nothing else.
set -uo pipefail
STATE=${SLURM_UP_STATE:-/var/run/noisylabels-slurm.pids}
[ -f "$STATE" ] || exit 0
# slurmd before slurmctld before munged: the reverse of the start order
tac "$STATE" | while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$name" ]; then
        kill "$pid" && echo "slurm_down: stopped $name (pid $pid)"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
done
rm -f "$STATE"
