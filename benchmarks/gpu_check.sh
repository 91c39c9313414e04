#!/usr/bin/env bash
# Device check of divssl's GPU paths on one H100/H200 (< 10 minutes): bf16 SimCLR ResNet-50 @224
# throughput and MFU, the same with compile, a 1-GPU DDP step-equivalence check against the CPU,
# and GPU JPEG decode throughput. Writes one JSON (default: $OUT/gpu_check.json, or ./gpu_check.json).
#   benchmarks/gpu_check.sh                 # on a GPU machine
#   benchmarks/gpu_check.sh --smoke         # every section tiny on the CPU
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-.}/gpu_check.json"
export PYTHONPATH="${here}/../src${PYTHONPATH:+:${PYTHONPATH}}"
exec timeout "${GPU_CHECK_TIMEOUT:-590}" python "${here}/gpu_check.py" --out "${out}" "$@"
