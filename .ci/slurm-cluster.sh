#!/usr/bin/env bash
# A real SLURM cluster on one machine for bigtrain's cluster tests: munged, slurmctld and two emulated
# nodes (n1, n2: two slurmd on their own ports), everything -- key, config, spool, state, logs, PID files --
# in one folder, so it needs no systemd, no cgroups and nothing under /etc. Where slurmdbd and MariaDB are
# installed it also keeps job accounting (a MariaDB server and slurmdbd on the next two ports), so `sacct`
# answers as on a real cluster; without them the cluster runs with accounting off.
#
#   .ci/slurm-cluster.sh start    start it (fresh state) and wait until both nodes are idle
#   .ci/slurm-cluster.sh stop     cancel its jobs and stop the daemons by the PIDs in their PID files
#   .ci/slurm-cluster.sh env      print `export SLURM_CONF=...` for clients (eval "$(... env)")
#   .ci/slurm-cluster.sh status   exit 0 when the controller answers
#
# Settings (environment): BIGTRAIN_SLURM_DIR (state folder, default $TMPDIR/bigtrain-slurm) and
# BIGTRAIN_SLURM_PORT (controller port; the nodes use the next two, the database and slurmdbd the two after,
# default 26817). Needs Debian's slurmctld slurmd slurm-client munge (accounting: slurmdbd mariadb-server);
# run as root (SlurmUser=root).
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
DB_PORT=$((PORT + 3))
DBD_PORT=$((PORT + 4))

accounting_installed() {
    command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null
}

accounting_lines() {
    if accounting_installed; then
        printf 'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n'
        printf 'AccountingStoragePort=%s\n' "$DBD_PORT"
        # For slurmdbd, the "password" names the munge socket that clients sign their requests with.
        printf 'AccountingStoragePass=%s\n' "$DIR/munge/munge.socket"
        # Keep each job's comment (bigtrain's run directory) in the database, for sacct.
        printf 'AccountingStoreFlags=job_comment\n'
    else
        printf 'AccountingStorageType=accounting_storage/none\n'
    fi
}

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
$(accounting_lines)
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MailProg=/bin/true
KillWait=10
ReturnToService=2
InactiveLimit=0
# squeue shows finished jobs only until MinJobAge has passed: keep them for tests (sacct keeps them all).
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

write_dbd_config() {
    # slurmdbd refuses a config file that others can read (it holds the database password).
    (
        umask 077
        cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DIR/db.pass")
StorageLoc=slurm_acct_db
EOF
    )
}

wait_for() {
    local what="$1" i
    shift
    for i in $(seq 1 60); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "slurm-cluster: $what not up after 30 s; see $DIR/log" >&2
    return 1
}

start_accounting() {
    rm -rf "$DIR/db"
    mariadb-install-db --no-defaults --datadir="$DIR/db" --user=root --auth-root-authentication-method=normal \
        --skip-test-db >"$DIR/log/db-install.log" 2>&1
    mariadbd --no-defaults --datadir="$DIR/db" --user=root --socket="$DIR/run/db.sock" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --pid-file="$DIR/run/db.pid" --log-error="$DIR/log/db.log" \
        --skip-log-bin --innodb-buffer-pool-size=32M >/dev/null 2>&1 &
    wait_for "MariaDB" mariadb --no-defaults --socket="$DIR/run/db.sock" -uroot -e "SELECT 1"
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DIR/db.pass")
    mariadb --no-defaults --socket="$DIR/run/db.sock" -uroot -e "
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$DIR/db.pass")';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    write_dbd_config
    # slurmdbd reads slurmdbd.conf from the folder of SLURM_CONF.
    slurmdbd
    wait_for "slurmdbd" sacctmgr -i list cluster
    sacctmgr -i add cluster bigtrain-test >/dev/null
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
    if accounting_installed; then
        start_accounting
    fi
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
    stop_pid_file "$DIR/run/slurmdbd.pid"
    stop_pid_file "$DIR/run/db.pid"
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
