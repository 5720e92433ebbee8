#!/usr/bin/env bash
# First run on a machine with a GPU: build (if the installed/in-place extension has no CUDA kernels), the GPU
# tests, then the kernel and reward benchmarks (ours vs torchvision v2 on the GPU vs the plain torch
# composition), all within ~10 minutes. Everything goes to $OUT/gpu_check.txt (OUT defaults to ./gpu_check).
#
#   bash bench/gpu_check.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.txt"
PY="${PYTHON:-python}"
exec > >(tee "$LOG") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }
step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'devices', torch.cuda.device_count())"
step "build (only if needed)"
if ! PYTHONPATH=. "$PY" -c "import sys, vlmreward.ops as o; sys.exit(0 if o.CUDA_BUILT else 1)" 2>/dev/null; then
  # one architecture: the local GPU's (a minute instead of six)
  ARCH=$("$PY" -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}{p[1]}')")
  CMAKE_CUDA_ARCHITECTURES="$ARCH" VLMREWARD_REQUIRE_CUDA=1 MAX_JOBS="${MAX_JOBS:-8}" \
    timeout 300 "$PY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  tail -2 "$OUT/build.log"
fi
PYTHONPATH=. "$PY" -c "import vlmreward, vlmreward._C as c; print(vlmreward.__file__, 'cuda_built', c.cuda_built, c.cuda_architectures)"
step "GPU tests + kernel tests"
PYTHONPATH=. timeout 240 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_ops_cuda.py tests/test_build_cuda_archs.py \
  tests/test_preprocess.py tests/test_reward_head.py || echo "TESTS FAILED (rc $?)"
step "kernel benchmarks on the GPU (ratio = baseline median / ours)"
PYTHONPATH=. BENCH_DEVICE=cuda timeout 180 "$PY" -m pytest -q -p no:cacheprovider bench/bench_ops.py \
  -k "not B=1]" --benchmark-columns=median,iqr,rounds --benchmark-sort=name --benchmark-json="$OUT/bench_cuda.json" \
  || echo "BENCH FAILED (rc $?)"
"$PY" - "$OUT/bench_cuda.json" <<'PYEOF' || true
import collections, json, sys
groups = collections.defaultdict(dict)
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    groups[b["group"]][b["params"]["impl"]] = b["stats"]["median"]
for name, impls in groups.items():
    ours = impls.get("ours")
    cells = " ".join(f"{k} {v / ours:.2f}x" for k, v in impls.items() if k != "ours" and ours)
    print(f"{name}: ours {ours * 1e3:.3f} ms  {cells}")
PYEOF
step "reward model end to end: RewardModel on cuda vs cpu (64 CartPole-size frames, median of 20)"
PYTHONPATH=. timeout 120 "$PY" - <<'PYEOF' || true
import time, statistics, numpy as np, torch
from vlmreward import GoalBank, RewardModel, load_model
frames = np.random.default_rng(0).integers(0, 256, (64, 400, 600, 3), dtype=np.uint8)
goals = ["the pole is upright", "the cart is at the left edge", "the cart is at the right edge"]
for device in ("cuda", "cpu"):
    model = load_model("default", device=device)
    rm = RewardModel(model, GoalBank(model, goals, num_negatives=2, seed=0), threshold=0.5)
    x = torch.from_numpy(frames).to(device)
    ids = torch.zeros(64, dtype=torch.int64, device=device)
    ts = []
    for i in range(21):
        if device == "cuda": torch.cuda.synchronize()
        t = time.perf_counter(); rm(x, ids)
        if device == "cuda": torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    print(f"{device}: {64 / statistics.median(ts[1:]):.0f} frames/s (frames already on the device)")
PYEOF
step "done"
