#!/usr/bin/env bash
# Train on every GPU of this machine (or several machines) with torchrun + DDP.
#
#   examples/train_multi_gpu.sh CONFIG CHIPS_DIR RUN_DIR [extra `aerialct train` options]
#
# NPROC        processes on this node (default: the number of GPUs, else 1)
# NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   for several machines (default: one)
# DEVICE       cuda (default when a GPU is present; NCCL) or cpu (gloo)
# Each process trains on its share of the chips (DistributedSampler); rank 0
# alone writes the run folder. Resume a stopped run with --resume.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 CONFIG CHIPS_DIR RUN_DIR [aerialct train options...]" >&2
  exit 2
fi
config=$1
chips=$2
run=$3
shift 3

gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
nproc=${NPROC:-$(( gpus > 0 ? gpus : 1 ))}
device=${DEVICE:-$([[ $gpus -gt 0 ]] && echo cuda || echo cpu)}
nnodes=${NNODES:-1}

if [[ $nnodes -gt 1 ]]; then
  rdzv=(--nnodes "$nnodes" --node_rank "${NODE_RANK:?set NODE_RANK}"
        --master_addr "${MASTER_ADDR:?set MASTER_ADDR}" --master_port "${MASTER_PORT:-29500}")
else
  rdzv=(--standalone --nnodes 1)
fi

exec torchrun "${rdzv[@]}" --nproc_per_node "$nproc" -m aerialct \
  train --config "$config" --data "$chips" --out "$run" --device "$device" "$@"
