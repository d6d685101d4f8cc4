#!/usr/bin/env bash
# A real SLURM cluster on one machine for bigtrain's cluster tests: munged, slurmctld and two emulated
# nodes (n1, n2: two slurmd on their own ports), everything -- key, config, spool, state, logs, PID files --
# in one folder, so it needs no systemd, no cgroups and nothing under /etc.
#
#   .ci/slurm-cluster.sh start    start it (fresh state) and wait until both nodes are idle
#   .ci/slurm-cluster.sh stop     cancel its jobs and stop the daemons by the PIDs in their PID files
#   .ci/slurm-cluster.sh env      print `export SLURM_CONF=...` for clients (eval "$(... env)")
#   .ci/slurm-cluster.sh status   exit 0 when the controller answers
#
# Settings (environment): BIGTRAIN_SLURM_DIR (state folder, default $TMPDIR/bigtrain-slurm) and
# BIGTRAIN_SLURM_PORT (controller port; the nodes use the next two, default 26817).
# Needs Debian's slurmctld slurmd slurm-client munge; run as root (SlurmUser=root).
set -euo pipefail

DIR="${BIGTRAIN_SLURM_DIR:-${TMPDIR:-/tmp}/bigtrain-slurm}"
PORT="${BIGTRAIN_SLURM_PORT:-26817}"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"

# The emulated nodes claim the host's cores (each of them: they oversubscribe the same CPUs) and a memory
# size below the real one, so slurmd never drains a node for "low resources".
# (getconf, not nproc: nproc follows OMP_NUM_THREADS, which test runs set to 1.)
CPUS="$(getconf _NPROCESSORS_ONLN)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)"

write_config() {
    cat >"$CONF" <<EOF
ClusterName=bigtrain-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MailProg=/bin/true
KillWait=10
ReturnToService=2
InactiveLimit=0
# Without accounting, finished jobs are only visible until MinJobAge has passed: keep them for tests.
MinJobAge=600
NodeName=n1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((PORT + 1)) CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
NodeName=n2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((PORT + 2)) CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
}

running() {
    # A zombie (exited, not yet reaped by a PID 1 that does not reap) counts as stopped.
    [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1")" != Z* ]]
}

pid_alive() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || return 1
    running "$pid"
}

start_munge() {
    mkdir -p "$DIR/munge"
    # munged refuses a socket folder others can write to, and a key readable by others.
    chmod 755 "$DIR/munge"
    if [[ ! -s "$DIR/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 600 "$DIR/munge/munge.key"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
}

wait_idle() {
    local i
    for i in $(seq 1 60); do
        if [[ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle')" == 2 ]]; then
            return 0
        fi
        sleep 0.5
    done
    echo "slurm-cluster: nodes not idle after 30 s; see $DIR/log" >&2
    sinfo -N >&2 || true
    return 1
}

start() {
    if pid_alive "$DIR/run/slurmctld.pid"; then
        echo "slurm-cluster: already running in $DIR" >&2
        return 0
    fi
    for tool in munged slurmctld slurmd sinfo; do
        command -v "$tool" >/dev/null || { echo "slurm-cluster: $tool not installed" >&2; return 1; }
    done
    mkdir -p "$DIR/state" "$DIR/spool/n1" "$DIR/spool/n2" "$DIR/run" "$DIR/log"
    write_config
    export SLURM_CONF="$CONF"
    start_munge
    slurmctld -c -f "$CONF"
    slurmd -f "$CONF" -N n1
    slurmd -f "$CONF" -N n2
    wait_idle
    echo "slurm-cluster: running in $DIR (export SLURM_CONF=$CONF)"
}

stop_pid_file() {
    local pid i
    pid="$(cat "$1" 2>/dev/null)" || return 0
    running "$pid" || return 0
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        running "$pid" || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    export SLURM_CONF="$CONF"
    if pid_alive "$DIR/run/slurmctld.pid"; then
        scancel --full --signal=KILL --user="$(id -un)" 2>/dev/null || true
        sleep 1
    fi
    stop_pid_file "$DIR/run/slurmd-n1.pid"
    stop_pid_file "$DIR/run/slurmd-n2.pid"
    stop_pid_file "$DIR/run/slurmctld.pid"
    stop_pid_file "$DIR/run/munged.pid"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
env) echo "export SLURM_CONF=$CONF" ;;
status) pid_alive "$DIR/run/slurmctld.pid" && SLURM_CONF="$CONF" scontrol ping >/dev/null ;;
*)
    echo "usage: $0 start|stop|env|status" >&2
    exit 2
    ;;
esac
