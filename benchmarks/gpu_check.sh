#!/usr/bin/env bash
# The GPU checks of issue 17 in one command: tests/test_cuda.py, then benchmarks/gpu.py.
#
# Usage: [OUT=dir] [PYTHON=python] [TEST_S=200] [BENCH_S=250] benchmarks/gpu_check.sh
#
# Writes under $OUT (default docs/gpu): env.txt (versions, nvidia-smi), test_cuda.log (one line per test,
# then failures and the slowest tests), gpu.md and gpu.json (the benchmark table,
# rewritten after every row, so a run cut short keeps what it measured) and gpu_bench.log. Bounded: the
# tests are killed after TEST_S seconds, the benchmark after BENCH_S (its sections stop starting 60 s
# before), about 7.5 minutes in all with the defaults; either part running out of time leaves the other
# to run. Needs a CUDA build of torch with torch_geometric (PYTHON, default: .venv/bin/python if its torch
# sees a GPU, else python3); downloads nothing. Wheels in .whl/ are installed first (into /tmp/site, on
# PYTHONPATH): a GPU image without num2words (the demo's data) gets it from
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl num2words==0.5.14
# With PROTOCOL_DATA (a folder holding heterophilous/minesweeper.npz, copied into the repository for the
# trip: ../shared does not travel), benchmarks/heterophilous_protocol.py runs beside the tests for PROTO_S
# seconds (default 240), continuing docs/heterophilous_protocol.json (--resume) into $OUT; the tests only
# check numbers, so sharing the GPU with them costs nothing but time, and the benchmark then runs alone.
# At most 8 files come back from a device call: $OUT holds 5 without the protocol, 8 with it.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-docs/gpu}"
TEST_S="${TEST_S:-200}"
BENCH_S="${BENCH_S:-250}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    PYTHON=.venv/bin/python
  fi
fi

{
  date
  "$PYTHON" -c "import sys, torch, torch_geometric; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None); print('torch_geometric', torch_geometric.__version__)"
  nvidia-smi
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | head -n 4

timeout -k 10 "$TEST_S" "$PYTHON" -m pytest -v -p no:cacheprovider tests/test_cuda.py -rfE --durations=15 \
  > "$OUT/test_cuda.log" 2>&1 &
TESTS=$!
if [ -n "${PROTOCOL_DATA:-}" ]; then
  PROTO_S="${PROTO_S:-240}"
  cp docs/heterophilous_protocol.json "$OUT/heterophilous_protocol.json"
  timeout -k 10 "$PROTO_S" "$PYTHON" benchmarks/heterophilous_protocol.py --data "$PROTOCOL_DATA" --resume \
    --workers "${WORKERS:-6}" --budget-s $((PROTO_S - 90)) --results "$OUT/heterophilous_protocol.json" \
    --out "$OUT/heterophilous_protocol.md" > "$OUT/protocol.log" 2>&1
  echo "benchmarks/heterophilous_protocol.py exit status $? (124: killed after $PROTO_S s)" | tee -a "$OUT/protocol.log"
fi
wait "$TESTS"
echo "tests/test_cuda.py exit status $? (124: killed after $TEST_S s)" | tee -a "$OUT/test_cuda.log"
grep -E "PASSED|FAILED|ERROR|SKIPPED" "$OUT/test_cuda.log" | grep -c PASSED | sed 's/^/passed: /'
grep -E "^(FAILED|ERROR)" "$OUT/test_cuda.log" || true

timeout -k 10 "$BENCH_S" "$PYTHON" -u benchmarks/gpu.py --out "$OUT" --budget-s $((BENCH_S - 60)) \
  > "$OUT/gpu_bench.log" 2>&1
echo "benchmarks/gpu.py exit status $? (124: killed after $BENCH_S s)" | tee -a "$OUT/gpu_bench.log"
cat "$OUT/gpu.md" 2>/dev/null || tail -n 20 "$OUT/gpu_bench.log"
