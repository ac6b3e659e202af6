#!/usr/bin/env bash
# Run a stage on every node of a SLURM allocation: one srun task per node, each an `accelerate launch` with
# that node's rank, the node count and the first node as the rendezvous host, all read from SLURM.
#   sbatch --nodes 2 --gpus-per-node 8 scripts/slurm_launch.sh configs/accelerate/zero3.yaml -m rlhf ppo --config configs/tiny/ppo.yaml
#   salloc --nodes 2 --gpus-per-node 8   then   bash scripts/slurm_launch.sh configs/accelerate/ddp.yaml -m rlhf sft --config configs/tiny/sft.yaml
# Arguments: an accelerate config, then what `accelerate launch` runs (a script or -m module, with its arguments).
# Environment (all optional): PROCESSES_PER_NODE (default: SLURM's GPUs per node, else the node's GPUs),
# MAIN_PROCESS_IP (default: the first node's hostname), MAIN_PROCESS_PORT (default: 29500 + job id mod 1000,
# so two jobs sharing a node do not collide), RLHF_SLURM_DRY_RUN=1 (print the command instead of running it).
# run.output_dir must be on a filesystem every node sees: checkpoints are written by all ranks.
#SBATCH --job-name=rlhf
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: scripts/slurm_launch.sh ACCELERATE_CONFIG (SCRIPT | -m MODULE) [ARGS...]" >&2
  exit 2
fi
if [ -z "${SLURM_JOB_ID:-}" ]; then
  echo "slurm_launch.sh: not inside a SLURM allocation (run it with sbatch, or within salloc)" >&2
  exit 2
fi
config_file=$1
shift

# In the batch step (or straight from salloc): start one task per node, each re-entering this script.
if [ "${RLHF_SLURM_TASK:-0}" != 1 ]; then
  nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
  export RLHF_SLURM_TASK=1
  exec srun --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 bash "$0" "$config_file" "$@"
fi

num_machines=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
machine_rank=${SLURM_NODEID:-${SLURM_PROCID:-0}}

processes_per_node=${PROCESSES_PER_NODE:-}
if [ -z "$processes_per_node" ]; then
  # SLURM_GPUS_ON_NODE is a count; SLURM_GPUS_PER_NODE may be "8" or "a100:8"
  gpus_per_node=${SLURM_GPUS_PER_NODE:-}
  processes_per_node=${SLURM_GPUS_ON_NODE:-${gpus_per_node##*:}}
fi
if [ -z "$processes_per_node" ] && command -v nvidia-smi >/dev/null 2>&1; then
  processes_per_node=$(nvidia-smi -L | wc -l)
fi
if [ -z "$processes_per_node" ] || [ "$processes_per_node" -lt 1 ]; then
  echo "slurm_launch.sh: cannot tell how many processes to start per node; set PROCESSES_PER_NODE" >&2
  exit 2
fi

main_process_ip=${MAIN_PROCESS_IP:-}
if [ -z "$main_process_ip" ]; then
  main_process_ip=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
fi
main_process_port=${MAIN_PROCESS_PORT:-$((29500 + SLURM_JOB_ID % 1000))}

command=(
  accelerate launch
  --config_file "$config_file"
  --num_machines "$num_machines"
  --num_processes "$((num_machines * processes_per_node))"
  --machine_rank "$machine_rank"
  --main_process_ip "$main_process_ip"
  --main_process_port "$main_process_port"
  --rdzv_backend static
  --same_network
)
# DeepSpeed's own multi-node launcher would ssh (pdsh) into the nodes; srun already put us on each one.
if grep -q "^distributed_type: *DEEPSPEED" "$config_file"; then
  command+=(--deepspeed_multinode_launcher standard)
fi
command+=("$@")

if [ "${RLHF_SLURM_DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi
echo "slurm_launch.sh: node $machine_rank of $num_machines, $processes_per_node processes, rendezvous $main_process_ip:$main_process_port" >&2
exec "${command[@]}"
