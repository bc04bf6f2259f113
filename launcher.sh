#!/usr/bin/env bash
# ./launcher.sh problem_name [--key=value ...]    run config/problem_name.py
# ./launcher.sh list                              every problem with its one-line description
#
# The problem's config file is run by train.py, or by the script its "# script: <path>" line names.
# Several visible GPUs: torchrun --nproc_per_node=<GPUs>. Multi-node: set NNODES, NODE_RANK,
# MASTER_ADDR and MASTER_PORT on every node (the usual torchrun variables) and run the same command.
# A model too large for DDP: add --parallel=fsdp (sharded weights, gradients and optimizer state; docs/usage.md).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

describe() {  # first line of the config's docstring
  sed -n '1{s/^"""//;s/"""$//;s/^# *//;p;q}' "$1"
}

if [ $# -lt 1 ] || [ "$1" = "list" ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  [ $# -lt 1 ] && echo "usage: ./launcher.sh problem_name [--key=value ...]" && echo
  for f in config/*.py; do
    printf '%-36s %s\n' "$(basename "$f" .py)" "$(describe "$f")"
  done
  exit 0
fi

problem=$1; shift
cfg="config/$problem.py"
if [ ! -f "$cfg" ]; then
  near=$("$PY" - "$problem" <<'PYEOF'
import difflib, os, sys
names = sorted(f[:-3] for f in os.listdir('config') if f.endswith('.py'))
print(', '.join(difflib.get_close_matches(sys.argv[1], names, n=3, cutoff=0.3)) or ', '.join(names))
PYEOF
)
  echo "error: unknown problem '$problem'; nearest: $near (./launcher.sh list shows all)" >&2
  exit 2
fi

script=$(sed -n 's/^# script: *//p' "$cfg" | head -n1)
script=${script:-train.py}

ngpu=0
if command -v nvidia-smi >/dev/null 2>&1; then
  ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
if [ "$script" = "train.py" ] && { [ "${ngpu:-0}" -gt 1 ] || [ "${NNODES:-1}" -gt 1 ]; }; then
  exec torchrun --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
    --nproc_per_node="${NPROC_PER_NODE:-$ngpu}" "$script" "$cfg" "$@"
fi
exec "$PY" "$script" "$cfg" "$@"
