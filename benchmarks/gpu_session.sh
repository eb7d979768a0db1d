#!/usr/bin/env bash
# The one script to run when a task is lent a GPU: about 15 minutes of device time in all, so one call of 10 minutes.
#
# Prepare on this machine (the device has PyTorch but no package index, and takes at most 64 MiB of working tree):
#   1. wheels for Python 3.12 of what the device lacks, into .whl/ (papermill, ipykernel, mlxtend, pytorch-fid,
#      diffusers and their closure: `pip download --only-binary=:all: --python-version 3.12 ...`, less the packages
#      the device image lists);
#   2. MNIST's four .gz files into .devdata/mnist/ (the device cannot download them);
#   3. both folders in .git/info/exclude; call the device with carry [".whl", ".devdata"] and
#      `bash benchmarks/gpu_session.sh`. The committed figures (74 MB) would overflow the 64 MiB limit, so call it from
#      a throwaway branch that drops figures/ (the notebooks write theirs under $OUT).
#
# What it does, in parallel on the one GPU (each part with its own time limit, all done by about 540 s):
#   - notebooks 02, 03 and 04 in profile `auto` (= gpu on CUDA), cost ledger and figures under $OUT;
#   - the `gpu` and `full` dry runs of tests/test_dryrun.py on CUDA (notebook 01 on the real-CUB fixture: SynthBirds' caption
#     encoder, 88 MB, cannot travel), then, once the notebooks are done, bench_stackgan and bench_diffusion.
# Everything comes back as at most 6 tarballs under $OUT; `python benchmarks/gpu_session_summary.py <unpacked>` turns
# them into benchmarks/results/h200/gpu_session.json.
# Measured on an H200 (2026-11-29): the dry runs pass in 2 minutes; no gpu notebook finishes in 520 s (02 trains both
# models in 476 s, 03's three CGANs need about 19 minutes alone), and bench_diffusion needs over 60 s for
# torch.compile. Alone on the GPU (NOTEBOOKS=02_diffusion_mnist EXTRAS=0 NB_LIMIT=565, 2026-12-04) notebook 02 finishes
# in 446 s: one gpu notebook per session fits, the others do not.
set -u
T0=$(date +%s)
DEADLINE=${DEADLINE:-540}
OUT=${OUT:-/tmp/gpu_out}
W=/tmp/gpu_work
mkdir -p "$W/logs" "$W/nb" "$W/figures" "$W/results"
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$W/logs/pip.log" 2>&1 || echo "pip install failed (see pip.log)" | tee -a "$W/logs/summary.txt"
fi
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
export HWLIB_DATA="$PWD/.devdata" HWLIB_RUNS=/tmp/hwlib_runs HWLIB_FIGURES="$W/figures" HWLIB_PROGRESS=off \
       MPLBACKEND=Agg HWLIB_COST_LEDGER="$W/results/ledger.jsonl" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
python3 -m ipykernel install --user --name python3 >"$W/logs/kernel.log" 2>&1
{ nvidia-smi; python3 -c "import torch, numpy, hwlib; print(torch.__version__, numpy.__version__, torch.cuda.get_device_name())"; } \
  >"$W/logs/env.txt" 2>&1
echo "setup done at $(( $(date +%s) - T0 )) s" >>"$W/logs/summary.txt"

step() {  # step NAME SECONDS COMMAND...  (SECONDS is capped by what is left before the deadline)
  local name=$1 limit=$2; shift 2
  local cap; cap=$(left); [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -le 5 ]; then echo "$name skipped (no time left)" >>"$W/logs/summary.txt"; return; fi
  local start; start=$(date +%s)
  timeout -k 10 "$limit" "$@" >"$W/logs/$name.log" 2>&1
  echo "$name rc=$? seconds=$(( $(date +%s) - start )) limit=$limit" >>"$W/logs/summary.txt"
}

NOTEBOOKS=${NOTEBOOKS:-02_diffusion_mnist 03_cgan_mnist 04_vae_gan_ddpm}  # the gpu runs to attempt, side by side
NB_LIMIT=${NB_LIMIT:-520}  # seconds each notebook may run
EXTRAS=${EXTRAS:-1}        # 0: no dry runs or benchmarks beside the notebooks (the GPU is theirs alone)
pids=()
for nb in $NOTEBOOKS; do
  step "$nb" "$NB_LIMIT" python3 -m papermill "notebooks/$nb.ipynb" "$W/nb/$nb.ipynb" -k python3 -p profile auto \
    --log-output --no-progress-bar &
  pids+=($!)
done
[ "$EXTRAS" = 1 ] && (
  step dryrun 360 python3 -m pytest -q -p no:cacheprovider tests/test_dryrun.py \
    --deselect "tests/test_dryrun.py::test_gpu_and_full_profile_dry_run[01_stackgan_cub-gpu]" \
    --deselect "tests/test_dryrun.py::test_gpu_and_full_profile_dry_run[01_stackgan_cub-full]"
  while [ "$(left)" -gt 130 ] && pgrep -f "papermill notebooks/" >/dev/null; do sleep 5; done
  quiet=$(pgrep -f "papermill notebooks/" >/dev/null && echo "beside running notebooks" || echo "on a quiet GPU")
  echo "benchmarks ran $quiet" >>"$W/logs/summary.txt"
  step bench_stackgan 60 python3 benchmarks/bench_stackgan.py
  step bench_diffusion 150 python3 benchmarks/bench_diffusion.py --size full --steps 30
) &
pids+=($!)
wait "${pids[@]}"

cp benchmarks/results/stackgan.json benchmarks/results/diffusion_train_throughput.json "$W/results/" 2>/dev/null
cp /tmp/hwlib_runs/*/*/*.csv "$W/results/" 2>/dev/null
mkdir -p "$OUT"
for nb in $NOTEBOOKS; do
  tar -czf "$OUT/$nb.tar.gz" -C "$W" "nb/$nb.ipynb" "figures/$nb" 2>/dev/null
done
tar -czf "$OUT/logs.tar.gz" -C "$W" logs results
ls -la "$OUT"
cat "$W/logs/summary.txt"
