#!/usr/bin/env bash
# The prepared device check (issues 4 and 5): run on a GPU machine from the repo root with
# data/features and models/export present (carried). Needs torch, numpy, onnxruntime there.
set -u
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.cuda.is_available()); print('onnxruntime', o.__version__, o.get_available_providers())" | tee -a "$OUT/gpu.txt"
python3 benchmarks/nn_gpu_vs_cpu.py --materials 322 13151 --epochs 3 --threads 2 --out "$OUT/nn_gpu_vs_cpu.json"
python3 benchmarks/nn_gpu_vs_cpu.py --materials 13151 --epochs 3 --threads 16 --out "$OUT/nn_gpu_vs_cpu_16threads.json"
python3 benchmarks/onnx_providers.py --seconds 2 --out "$OUT/onnx_providers.json"
# The service's prediction path (Predictor) on CPU vs CUDA, given a parquet of site spectra
# (e.g. the test split's sites; needs pydantic and onnxruntime-gpu there, carried as wheels).
if [ -n "${SITES:-}" ]; then
  python3 benchmarks/predictor_providers.py "$SITES" --tile 50 --batches 64 1024 --out "$OUT/predictor_providers.json"
fi
