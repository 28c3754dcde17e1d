#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for repro's Slurm executor tests.
#
#   scripts/slurm_local.sh install   # Debian: slurmctld slurmd slurm-client munge (root)
#   scripts/slurm_local.sh start DIR # config, state and logs under DIR; prints SLURM_CONF=...
#   scripts/slurm_local.sh stop DIR  # stops what `start DIR` started
#
# No systemd: munged runs as the munge user, slurmctld and slurmd as the calling user, with a
# minimal slurm.conf (proctrack/linuxproc, task/none, no accounting storage, a job-completion
# text file) whose node line is what `slurmd -C` reports; everything talks over 127.0.0.1, so
# the host name need not resolve. Client commands find the cluster
# through SLURM_CONF=DIR/slurm.conf.
set -euo pipefail

command=${1:-}
dir=${2:-}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || { echo "installing Slurm needs root (apt-get)" >&2; exit 1; }
    local packages="slurmctld slurmd slurm-client munge"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $packages >/dev/null \
        || { apt-get update -q >/dev/null \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $packages >/dev/null; }
}

wait_for() {
    local what=$1; shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "$what did not come up" >&2
    return 1
}

start_munge() {
    # One munged serves every cluster on the machine; start it only when none answers.
    if munge -n </dev/null >/dev/null 2>&1; then return 0; fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then
            runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
            chown munge:munge /etc/munge/munge.key
            chmod 0400 /etc/munge/munge.key
        fi
    fi
    runuser -u munge -- /usr/sbin/munged
    wait_for munged munge -n
}

start() {
    [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    start_munge
    local node user
    node=$(slurmd -C | head -n 1)
    user=$(id -un)
    cat > "$dir/slurm.conf" <<EOF
ClusterName=repro-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
MinJobAge=3600
SchedulerParameters=sched_interval=1
KillWait=5
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF"
    wait_for slurmctld scontrol ping
    slurmd -f "$SLURM_CONF"
    wait_for "the node" sh -c "sinfo --noheader --format=%t | grep -Eq '^(idle|mix|alloc)'"
    echo "SLURM_CONF=$SLURM_CONF"
}

stop() {
    [ -n "$dir" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    for daemon in slurmd slurmctld; do
        local pidfile="$dir/$daemon.pid"
        if [ -s "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    for daemon in slurmd slurmctld; do
        local pidfile="$dir/$daemon.pid"
        for _ in $(seq 1 300); do
            [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$pidfile"
    done
}

case "$command" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
