#!/usr/bin/env bash
# First contact with a CUDA machine, in one go: versions, offline install, the CUDA tests, the toy
# and paper-architecture benchmarks. Every step runs under a timeout and a failed step does not
# stop the later ones; a summary table (step, rc, seconds) ends the run; exit 1 if any step failed.
#   bash benchmarks/gpu_check.sh            # on the GPU machine (see benchmarks/README.md)
#   bash benchmarks/gpu_check.sh --dry-run  # print the plan and run nothing (needs no sam2 wheels)
# Environment: PYTHON (python), WHEELS (.whl: sam2 and its pure-Python deps, for an offline
# install), BUDGET_S (570: the whole script, under a 600 s limit per command), COMPILE_BATCH (32:
# eval batch of the torch.compile step; 0 skips it), OUT (if set: log and result JSONs copied there).
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2  # the repository root
export PY=${PYTHON:-python} WHEELS=${WHEELS:-.whl}
BUDGET_S=${BUDGET_S:-570}
COMPILE_BATCH=${COMPILE_BATCH:-32}
RESULTS=benchmarks/results
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
if [ "$DRY" = 0 ] && [ -n "${OUT:-}" ]; then  # keep the whole log: a caller may see only its tail
  # tee ignores INT/TERM, so that a kill of the process group still lets it log the summary
  mkdir -p "$OUT" && exec > >(trap '' INT TERM; exec tee -a "$OUT/gpu_check.log") 2>&1
fi

# fss_sam2 from this checkout even if the editable install fails (run.py is started as a script)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# offline and quiet pip; the lent machine is thrown away afterwards, so a system Python is fine
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1

START=$SECONDS
NAMES=() RCS=() SECS=() PLANNED=()

run_step() {  # run_step NAME TIMEOUT_S CMD...: one step under a timeout, capped by the budget left
  local name=$1 limit=$2
  shift 2
  PLANNED+=("$name")
  if [ "$DRY" = 1 ]; then
    printf 'would run %s: timeout %ss %s\n' "$name" "$limit" "$*"
    return 0
  fi
  local left=$((BUDGET_S - (SECONDS - START)))
  if [ "$left" -lt 10 ]; then  # a skipped step counts as failed: it checked nothing
    echo "== $name: skipped, the ${BUDGET_S}s budget is spent"
    NAMES+=("$name") RCS+=(skipped) SECS+=(0)
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (timeout ${limit}s): $*"
  STEP=$name STEP_T0=$SECONDS
  # in the background + wait: a trapped INT/TERM interrupts `wait` (not a foreground command),
  # and `timeout` runs its command in a process group of its own, which a group kill misses
  timeout -k 10 "$limit" "$@" &
  CHILD=$!
  wait "$CHILD"
  local rc=$?
  CHILD=
  [ "$rc" = 124 ] && echo "== $name: timed out after ${limit}s"
  NAMES+=("$name") RCS+=("$rc") SECS+=($((SECONDS - STEP_T0)))
}

summary() {
  local i failed=0
  echo
  printf '%-20s %11s %8s\n' step rc seconds
  for i in "${!NAMES[@]}"; do
    printf '%-20s %11s %8s\n' "${NAMES[$i]}" "${RCS[$i]}" "${SECS[$i]}"
    [ "${RCS[$i]}" = 0 ] || failed=1
  done
  echo "total $((SECONDS - START))s"
  if [ -n "${OUT:-}" ]; then cp "$RESULTS"/*_cuda*.json "$OUT"/ 2>/dev/null; fi
  return $failed
}
CHILD=
interrupted() {  # stop the running step (timeout passes the TERM on to its command), then the summary
  echo "== interrupted"
  if [ -n "$CHILD" ]; then
    kill -TERM "$CHILD" 2>/dev/null
    wait "$CHILD"
    NAMES+=("$STEP") RCS+=(interrupted) SECS+=($((SECONDS - STEP_T0)))
  fi
  summary
  exit 130
}
trap interrupted INT TERM

# -- versions (no GPU needed) ------------------------------------------------------------------
if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
"$PY" -c 'import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| built for CUDA", torch.version.cuda)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "| capability", torch.cuda.get_device_capability(0),
          "| cuDNN", torch.backends.cudnn.version(), "| bf16", torch.cuda.is_bf16_supported())' \
  || echo "torch: not importable with $PY"
CUDA=$("$PY" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null || echo "no torch")
if "$PY" -c 'import sam2' 2>/dev/null; then
  echo "sam2: importable, no wheels needed"
else
  echo "sam2: not importable, the install step uses $WHEELS: $(ls "$WHEELS"/*.whl 2>/dev/null | wc -l) wheel(s)"
fi
if [ "$CUDA" != True ] && [ "$DRY" = 0 ]; then
  echo "CUDA not available ($CUDA): nothing to check here (try --dry-run)"
  exit 1
fi

# -- the steps ---------------------------------------------------------------------------------
# no result of an earlier run may pass for one of this run (the summary copies them to $OUT)
[ "$DRY" = 0 ] && rm -f "$RESULTS"/*_cuda*.json
# install: sam2 and its pure-Python deps from wheels (no index: the machine is offline), then this
# package without deps or build isolation (no index to fetch setuptools from); if that editable
# install fails, PYTHONPATH above still finds the checkout, so it only warns.
INSTALL='if ! "$PY" -c "import sam2" 2>/dev/null; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHEELS: build them (benchmarks/README.md)"; exit 3; }
  "$PY" -m pip install --no-deps --no-index "$WHEELS"/*.whl || exit 4
fi
"$PY" -m pip install --no-deps --no-index --no-build-isolation -e . \
  || echo "warning: editable install failed, using PYTHONPATH=$PWD"'
# preflight: every import the steps need, and the toy model built on CUDA
PREFLIGHT='import pytest, sam2, hydra, omegaconf, iopath, fss_sam2
fss_sam2.load_model(sam2="tiny-toy", dino="tiny-toy", image_size=128, device="cuda")
print("fss_sam2 from", fss_sam2.__file__, "| sam2 from", sam2.__file__)'

# timeouts: generous for a fresh process (imports, CUDA context, model build) plus the measured
# work, and summing to the 570 s budget, so the summary comes before the 600 s limit
run_step install 60 bash -c "$INSTALL"
run_step preflight 30 "$PY" -c "$PREFLIGHT"
run_step tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py -rs
run_step toy 40 "$PY" benchmarks/run.py --profile toy --device cuda --out "$RESULTS/toy_cuda.json"
for B in 1 8 32 128; do
  limit=$((B < 32 ? 45 : B == 32 ? 50 : 80))  # eval of B episodes = 2B images through both encoders
  run_step "paper_b$B" "$limit" "$PY" benchmarks/run.py --profile paper --device cuda --batch "$B" \
    --out "$RESULTS/paper_cuda_b$B.json"
done
if [ "$COMPILE_BATCH" != 0 ]; then  # torch.compile of the post-encoder: the compilation is most of it
  run_step "paper_b${COMPILE_BATCH}_compile" 100 "$PY" benchmarks/run.py --profile paper --device cuda \
    --batch "$COMPILE_BATCH" --compile --out "$RESULTS/paper_cuda_b${COMPILE_BATCH}_compile.json"
fi

if [ "$DRY" = 1 ]; then
  if [ "$CUDA" != True ]; then
    echo "CUDA not available: skipping the CUDA steps: ${PLANNED[*]} (torch.cuda.is_available(): $CUDA)"
  else
    echo "dry run: CUDA is available; run without --dry-run to run: ${PLANNED[*]}"
  fi
  exit 0
fi
summary
exit $?
