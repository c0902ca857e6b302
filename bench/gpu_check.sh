#!/usr/bin/env bash
# Build, test, sanitize and benchmark the CUDA kernel on a GPU machine; everything lands
# under $OUT (or bench/results/gpu_check). See bench/gpu_check.py.
set -u
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
