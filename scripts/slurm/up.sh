#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this machine (controller, compute daemon, accounting).
#
# Installs Debian's slurmctld, slurmd, slurm-client, munge, slurmdbd and mariadb-server when missing,
# writes the configs, starts every daemon by hand (no systemd), records their PIDs under $STATE and waits
# until the node is idle. Running it again while the cluster answers does nothing. `down.sh` stops it.
# This is a test and laptop cluster: on a real cluster you only point `hydra/launcher=slurm` at it.
set -euo pipefail

STATE=${DLAB_SLURM_STATE:-/var/lib/dlab-slurm}
CLUSTER=dlab
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

say() { echo "slurm-up: $*"; }
die() { echo "slurm-up: error: $*" >&2; exit 1; }

wait_for() {  # wait_for <seconds> <description> <command...>
    local limit=$1 what=$2; shift 2
    for _ in $(seq 1 "$((limit * 4))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "$what did not come up within ${limit}s (logs: $STATE/log)"
}

node_idle() { [[ "$(sinfo -h -n localhost -o %t 2>/dev/null)" =~ ^(idle|mix|alloc)$ ]]; }

if command -v sinfo >/dev/null && scontrol ping 2>/dev/null | grep -q UP && node_idle; then
    say "already up ($(sinfo -h -o '%P %D %t'))"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "needs root: it installs Debian packages and starts the SLURM, munge and \
MariaDB daemons. Run it as root (sudo make slurm-up), or use a cluster you already have."

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$STATE"/{log,spool/ctld,spool/d,run}

# --- munge: authentication between the daemons and the client commands
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    wait_for 10 munged sh -c 'munge -n | unmunge'
fi
cp /run/munge/munged.pid "$STATE/run/munged.pid"

# --- MariaDB: the accounting database behind slurmdbd (submitit polls job states with sacct)
install -d -o mysql -g mysql /run/mysqld
if [[ ! -d /var/lib/mysql/mysql ]]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/log/mariadb-install.log" 2>&1
fi
if ! mariadb-admin --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1; then
    mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
        --pid-file=/run/mysqld/mariadb.pid --bind-address=127.0.0.1 >"$STATE/log/mariadb.log" 2>&1 &
    wait_for 30 MariaDB mariadb-admin --socket=/run/mysqld/mysqld.sock ping
fi
cp /run/mysqld/mariadb.pid "$STATE/run/mariadb.pid"  # mariadbd runs as mysql and cannot write $STATE
mariadb --socket=/run/mysqld/mysqld.sock -e "
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

# --- configs
mkdir -p /etc/slurm
cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
CONF
chmod 0600 /etc/slurm/slurmdbd.conf  # slurmdbd refuses a config others can read

cpus=$(nproc)
memory_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
MailProg=/bin/true
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobRequeue=1
ReturnToService=2
SchedulerParameters=defer_batch
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

# --- daemons
if ! sacctmgr -n list cluster >/dev/null 2>&1; then
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
fi
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
if ! scontrol ping 2>/dev/null | grep -q UP; then
    slurmctld
    wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'
fi
if ! pgrep -x slurmd >/dev/null; then
    slurmd -N localhost
fi
wait_for 30 "node localhost" sh -c 'sinfo -h -n localhost -o %t | grep -Eq "idle|mix|alloc|down|drain"'
if ! node_idle; then
    scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
fi
wait_for 30 "an idle node" node_idle
say "up: $(sinfo -h -o '%P %D %c cpus %t') (state in $STATE)"
