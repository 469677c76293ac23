# The slurm.conf lines that every throw-away cluster of this repository shares (sourced by
# scripts/slurm/local-cluster.sh and scripts/cluster/netns-cluster.sh): munge authentication,
# root daemons, no cgroups and no accounting database, backfill on cores, requeue allowed.
#   slurm_conf_common SOCKET   prints them, munge listening on SOCKET
slurm_conf_common() {
    cat <<EOF
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long before it can start again (default 120 s,
# minimum 5); it is also the lifetime of a job step's launch credential
AuthInfo=socket=$1,cred_expire=5
SlurmUser=root
SlurmdUser=root
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SlurmdParameters=config_overrides
# job ids unique across clusters started here: PMIx keys per-step files by job id, and a new
# cluster's job 1 must not meet what an earlier one's left behind
FirstJobId=$(($(date +%s) % 60000 * 1000 + 1))
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# finished jobs leave squeue quickly
JobRequeue=1
MinJobAge=5
KillWait=5
InactiveLimit=0
ReturnToService=2
EOF
}
