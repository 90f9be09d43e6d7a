#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: every host runs the same command; jax.distributed.initialize()
# discovers the pod by itself (--distributed). Each host reads only its slice of the global batch.
#
#   TPU=my-v4-32 ZONE=us-central2-b CONFIG=configs/steerable_imagenet.py WORKDIR=gs://bucket/runs/x \
#     bash launch/tpu_pod.sh [--config.KEY=VALUE ...]
#
# WORKDIR should be a bucket (gs://...) so every host sees the same checkpoints; rerunning the
# same command after a preemption resumes from the latest one. Datasets are read from
# --config.data.data_dir (prepared tfds ArrayRecord files, e.g. gs://bucket/tensorflow_datasets).
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}" "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
REPO=${REPO:-$(git remote get-url origin 2>/dev/null || echo "")}
: "${REPO:?set REPO to a git URL of steerjax}"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e
  [ -d steerjax ] || git clone $REPO steerjax
  cd steerjax && git pull --ff-only
  python3 -m venv .venv && . .venv/bin/activate
  pip install -q -e . 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  python -m steerjax.main --distributed --config $CONFIG --workdir $WORKDIR $*
"
