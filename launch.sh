#!/usr/bin/env bash
# Starts training here, on simulated CPU devices, on every worker of a TPU VM pod slice, or in a
# SLURM job. With no flags: the embedded default (configs/digits.py) into ./runs/digits.
#   ./launch.sh --config=configs/mnist.py --workdir=runs/mnist --config.num_train_steps=2000
#   ./launch.sh --target=devices --cpu_devices=8
#   ./launch.sh --target=tpu --tpu=NAME --zone=ZONE [--project=P] [--repo=URL] [--ref=REV] FLAGS
#   ./launch.sh --target=slurm [--port=N] FLAGS         # inside an sbatch/salloc allocation
# --dry_run prints the command without running it. Every other flag goes to `python -m cgan_jax.main`.
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "launch.sh: $*" >&2; exit 2; }

target=local tpu= zone= project= repo= ref= cpu_devices= port= dry_run=0
args=()
for arg in "$@"; do
  case "$arg" in
    --target=*) target="${arg#*=}" ;;
    --tpu=*) tpu="${arg#*=}" ;;
    --zone=*) zone="${arg#*=}" ;;
    --project=*) project="${arg#*=}" ;;
    --repo=*) repo="${arg#*=}" ;;
    --ref=*) ref="${arg#*=}" ;;
    --cpu_devices=*) cpu_devices="${arg#*=}" ;;
    --port=*) port="${arg#*=}" ;;
    --dry_run) dry_run=1 ;;
    -h|--help)
      sed -n '2,8s/^# \{0,1\}//p' "$0"
      echo "The training flags: python -m cgan_jax.main --help."
      exit 0 ;;
    *) args+=("$arg") ;;
  esac
done

# A flag of another target would be ignored: say so instead.
[ -z "$cpu_devices" ] || [ "$target" = devices ] || die "--cpu_devices goes with --target=devices."
[ -z "$tpu$zone$project$repo$ref" ] || [ "$target" = tpu ] ||
  die "--tpu, --zone, --project, --repo and --ref go with --target=tpu."
[ -z "$port" ] || [ "$target" = slurm ] || die "--port goes with --target=slurm."
for arg in ${args[@]+"${args[@]}"}; do
  case "$arg" in
    --target|--tpu|--zone|--project|--repo|--ref|--cpu_devices|--port)
      die "write $arg=VALUE (with '=')." ;;
  esac
done

if [ -z "${PYTHON:-}" ]; then
  PYTHON=python
  if [ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ]; then PYTHON=.venv/bin/python; fi
fi

# One word as the shell reads it: bare when safe, else single-quoted.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
quote_all() {
  local out=() word
  for word in "$@"; do out+=("$(quote "$word")"); done
  printf '%s' "${out[*]}"
}

# Prints the command, then runs it unless --dry_run.
run() {
  echo "$(quote_all "$@")"
  if [ "$dry_run" = 0 ]; then exec "$@"; fi
}

main=("$PYTHON" -m cgan_jax.main)
case "$target" in
  local)
    run "${main[@]}" ${args[@]+"${args[@]}"} ;;
  devices)
    # Every local device in one process; --cpu_devices=N simulates N devices on the CPU.
    if [ -n "$cpu_devices" ]; then
      [[ "$cpu_devices" =~ ^[1-9][0-9]*$ ]] || die "--cpu_devices must be a positive integer."
      export JAX_PLATFORMS=cpu
      export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$cpu_devices"
      echo "JAX_PLATFORMS=$JAX_PLATFORMS XLA_FLAGS=$(quote "$XLA_FLAGS")"
    fi
    run "${main[@]}" ${args[@]+"${args[@]}"} ;;
  tpu)
    [ -n "$tpu" ] && [ -n "$zone" ] || die "--target=tpu needs --tpu=NAME and --zone=ZONE."
    repo="${repo:-$(git remote get-url origin 2>/dev/null || true)}"
    [ -n "$repo" ] || die "--target=tpu needs --repo=URL (a git URL every worker can clone)."
    ref="${ref:-$(git rev-parse HEAD 2>/dev/null || true)}"
    [ -n "$ref" ] || die "--target=tpu needs --ref=REV (a commit or branch of --repo)."
    # On every worker: the same commit, installed with TPU JAX, started with the same flags.
    remote="set -e; [ -d cgan_jax ] || git clone -q $(quote "$repo") cgan_jax; cd cgan_jax"
    remote+="; git fetch -q origin; git checkout -q $(quote "$ref")"
    remote+="; python3 -m pip install -q -e . 'jax[tpu]'"
    remote+="; python3 -m cgan_jax.main --distributed=yes"
    [ ${#args[@]} = 0 ] || remote+=" $(quote_all "${args[@]}")"
    cmd=(gcloud compute tpus tpu-vm ssh "$tpu" "--zone=$zone")
    [ -z "$project" ] || cmd+=("--project=$project")
    cmd+=(--worker=all)
    # Printed with the remote command in double quotes, exactly as it is passed.
    escaped=$(printf '%s' "$remote" | sed 's/[\\"$`]/\\&/g')
    echo "$(quote_all "${cmd[@]}") --command=\"$escaped\""
    if [ "$dry_run" = 0 ]; then exec "${cmd[@]}" "--command=$remote"; fi ;;
  slurm)
    # One process per task (JAX on SLURM: one task per GPU); process 0 runs on the first node.
    [ -n "${SLURM_JOB_ID:-}" ] || die "--target=slurm runs inside an allocation (sbatch or salloc)."
    ntasks="${SLURM_NTASKS:-${SLURM_NPROCS:-}}"
    [ -n "$ntasks" ] || die "SLURM_NTASKS is not set; allocate with --ntasks or --ntasks-per-node."
    host=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | awk 'NR == 1')  # awk reads it all: no SIGPIPE under pipefail
    port="${port:-$((61440 + SLURM_JOB_ID % 4096))}"
    # --process_id comes from each task's SLURM_PROCID (JAX's SLURM detection).
    run srun --kill-on-bad-exit=1 "${main[@]}" --distributed=yes \
      "--coordinator_address=$host:$port" "--num_processes=$ntasks" ${args[@]+"${args[@]}"} ;;
  *)
    die "Unknown --target=$target; choose local, devices, tpu or slurm." ;;
esac
