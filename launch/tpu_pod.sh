#!/usr/bin/env bash
# Runs a dctjax config on every worker of a TPU VM (v3/v4/v5) and streams worker 0's log.
#
#   bash launch/tpu_pod.sh --tpu=my-v4-32 --zone=us-central2-b \
#       --config=configs/dctdiff_afhq512.py --workdir=gs://my-bucket/runs/afhq512 [--project=P]
#       [--repo=https://github.com/you/dctjax.git --ref=main]   # pull on the workers instead of copying
#       [--dry-run]                                              # print the commands, run nothing
#       [-- --config.batch_size=256 ...]                         # extra flags for launch/train.py
#
# Every worker runs the same command; jax.distributed.initialize() finds the pod's coordinator
# itself (DCTJAX_MULTIHOST=1). A GCS path works as --workdir (orbax writes it directly).
set -euo pipefail

TPU="" ZONE="" PROJECT="" CONFIG="" WORKDIR="" REPO="" REF="main" DRY_RUN=0
REMOTE_DIR="dctjax" LOG="dctjax_train.log"
EXTRA=()
usage() { sed -n '2,12p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --tpu=*) TPU="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --repo=*) REPO="${1#*=}" ;;
    --ref=*) REF="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done
for v in TPU ZONE CONFIG WORKDIR; do
  if [ -z "${!v}" ]; then echo "missing --$(echo "$v" | tr 'A-Z' 'a-z')=..." >&2; usage 2; fi
done

GCLOUD=(gcloud compute tpus tpu-vm)
SCOPE=(--zone="$ZONE")
[ -n "$PROJECT" ] && SCOPE+=(--project="$PROJECT")

run() {
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

# 1. Code on every worker: pull from a repository, or copy this checkout.
if [ -n "$REPO" ]; then
  run "${GCLOUD[@]}" ssh "$TPU" "${SCOPE[@]}" --worker=all --command \
    "if [ -d $REMOTE_DIR/.git ]; then git -C $REMOTE_DIR fetch -q origin && git -C $REMOTE_DIR checkout -q $REF && git -C $REMOTE_DIR pull -q; else git clone -q -b $REF $REPO $REMOTE_DIR; fi"
else
  ROOT="$(cd "$(dirname "$0")/.." && pwd)"
  run "${GCLOUD[@]}" scp --recurse "$ROOT" "$TPU:~/$REMOTE_DIR" "${SCOPE[@]}" --worker=all
fi

# 2. Install (TPU build of jaxlib) and start training on all workers, detached from the ssh session.
TRAIN="python launch/train.py --config=$CONFIG --workdir=$WORKDIR"
for a in "${EXTRA[@]}"; do TRAIN+=" $(printf '%q' "$a")"; done
run "${GCLOUD[@]}" ssh "$TPU" "${SCOPE[@]}" --worker=all --command \
  "cd $REMOTE_DIR && python3 -m pip install -q -c constraints.txt -e . 'jax[tpu]' && DCTJAX_MULTIHOST=1 nohup $TRAIN > ~/$LOG 2>&1 &"

# 3. Follow worker 0's log (Ctrl-C stops following, not training).
run "${GCLOUD[@]}" ssh "$TPU" "${SCOPE[@]}" --worker=0 --command "tail -n +1 -F ~/$LOG"
