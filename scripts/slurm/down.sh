#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by up.sh, daemon by daemon, by the PIDs it recorded.
set -uo pipefail

STATE=${DLAB_SLURM_STATE:-/var/lib/dlab-slurm}
stopped=()
for daemon in slurmd slurmctld slurmdbd mariadb munged; do
    pid_file="$STATE/run/$daemon.pid"
    [[ -s $pid_file ]] || continue
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        stopped+=("$daemon")
    fi
    rm -f "$pid_file"
done
echo "slurm-down: stopped ${stopped[*]:-nothing (not running)}"
