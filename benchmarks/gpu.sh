#!/usr/bin/env bash
# The checks that need a GPU, in one run on a CUDA machine: the CUDA tests, then
# benchmarks/throughput.py with its GPU rows (f) and (f') (issue 4's target: (f)/(a) >= 0.9).
#
#   benchmarks/gpu.sh OUTDIR [WORKERS]      # WORKERS: default CPUs - 1 (a core for the training process)
#
# Writes OUTDIR/{env.txt,tests.log,throughput.md,throughput.png,throughput.log,all_cores.log}; the
# clips and shards stay in /tmp/wds-audio-gpu for a second run. Each step has its own time limit, so
# a hang in one still leaves the others' output.
set -u
out=${1:?usage: benchmarks/gpu.sh OUTDIR [WORKERS]}
cpus=$(nproc)
w=${2:-$((cpus - 1))}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ python3 -c "import torch, soundfile, soxr; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'libsndfile', soundfile.__libsndfile_version__)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "cpus $cpus, workers $w"; } 2>&1 | tee "$out/env.txt"
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/wds_audio/test_resample.py tests/wds_audio/test_frontend.py \
    tests/wds_audio/test_features.py tests/wds_audio/test_augment.py tests/wds_audio/test_batch.py \
    tests/wds_audio/test_dali.py "tests/wds_audio/test_loader.py" -k "not test_loader or pin or resample or pcm" \
    2>&1 | tee "$out/tests.log"
timeout 330 python3 benchmarks/throughput.py --clips 8192 --workers "$w" --workdir /tmp/wds-audio-gpu --out "$out" \
    2>&1 | tee "$out/throughput.log"
# every core a worker, as (a) with all of them: for the record (no report file)
timeout 70 python3 benchmarks/throughput.py --clips 8192 --workers "$cpus" --rows "a,f" --workdir /tmp/wds-audio-gpu \
    2>&1 | tee "$out/all_cores.log"
