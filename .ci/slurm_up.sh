#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on this machine (slurmctld + slurmd + munged), for the
# tests in tests/test_slurm.py. Run as root on a Debian machine; idempotent: packages already
# installed are not reinstalled, daemons already running are left alone (and not recorded,
# so .ci/slurm_down.sh never stops what this script did not start).
#
#   bash .ci/slurm_up.sh        # then: sinfo; sbatch ...; bash .ci/slurm_down.sh
#
# The pids of the daemons this script started are written to $SLURM_UP_STATE (default
# /var/run/noisylabels-slurm.pids), one "name pid" per line.
set -euo pipefail

STATE=${SLURM_UP_STATE:-/var/run/noisylabels-slurm.pids}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
log() { echo "slurm_up: $*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "slurm_up: error: run as root (apt-get and the daemons need it)" >&2
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    log "installing Debian's slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

touch "$STATE"
running() { pgrep -x "$1" >/dev/null; }  # by exact process name: only to decide whether to start

# munge: a key, then the daemon
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if running munged; then
    log "munged already running: left alone"
else
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged
    else
        /usr/sbin/munged --force
    fi
    sleep 1
    echo "munged $(cat /run/munge/munged.pid)" >> "$STATE"
    log "started munged (pid $(cat /run/munge/munged.pid))"
fi

# slurm.conf for this host (kept when one exists that names this host)
HOST=$(hostname -s)
if [ ! -f "$CONF" ] || ! grep -q "^NodeName=$HOST " "$CONF"; then
    NODE=$(slurmd -C | head -1)   # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
    CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE")
    MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE")
    mkdir -p "$CONF_DIR"
    cat > "$CONF" <<CONF
# One-node cluster written by .ci/slurm_up.sh for the tests (tests/test_slurm.py).
ClusterName=noisylabels
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
# Jobs are requeued after preemption, a node failure or 'scontrol requeue' (sbatch --requeue)
JobRequeue=1
KillWait=30
MinJobAge=600
SlurmctldPidFile=/var/run/slurmctld.pid
SlurmdPidFile=/var/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmUser=root
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
    log "wrote $CONF ($HOST: $CPUS CPUs, $MEM MB)"
fi
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm

if running slurmctld; then
    log "slurmctld already running: left alone"
else
    /usr/sbin/slurmctld
    for _ in $(seq 50); do [ -s /var/run/slurmctld.pid ] && break; sleep 0.2; done
    echo "slurmctld $(cat /var/run/slurmctld.pid)" >> "$STATE"
    log "started slurmctld (pid $(cat /var/run/slurmctld.pid))"
fi
if running slurmd; then
    log "slurmd already running: left alone"
else
    /usr/sbin/slurmd
    for _ in $(seq 50); do [ -s /var/run/slurmd.pid ] && break; sleep 0.2; done
    echo "slurmd $(cat /var/run/slurmd.pid)" >> "$STATE"
    log "started slurmd (pid $(cat /var/run/slurmd.pid))"
fi

# wait until the node takes jobs
for _ in $(seq 60); do
    state=$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mix|alloc) log "node $HOST is $state"; exit 0 ;;
        down*|drain*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "slurm_up: error: node $HOST did not become idle (state '${state:-none}'); see" \
     "/var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
