#!/usr/bin/env bash
# Same-run comparison: convscope vs the servers a Python ML engineer would pick, on THE SAME
# ONNX model and THE SAME image, one machine, one run, one server at a time, for two models:
#
#   alexnet  torchvision AlexNet(num_classes=10), seeded random init, 224x224 RGB PNG (~103 kB):
#            the model's cost dominates (and falls steeply with the batch size)
#   tinyvgg  the project's TinyVGG trained on scikit-learn's digits (python -m model_export),
#            a 28x28 greyscale PNG: the HTTP path is nearly all of the cost
#
# Per model: the model and image (prepare_alexnet.py / prepare_tinyvgg.py), convscope's model
# repository (model_export import / the export itself), the peers' preprocessing recipe read
# from convscope's artifact (common/spec.py), raw onnxruntime's top-1 for the image
# (common/reference.py), raw onnxruntime in-process (raw_ort.py: batch 1 and best batch, the
# ceiling), then each server alone:
#
#   convscope        (this project: python -m service, max batch MAX_BATCH, otherwise defaults:
#                     onnxruntime's threads spin inside a run and stop when it returns)
#   convscope-nospin (the same with CONVSCOPE_ORT_ALLOW_SPINNING=false: threads sleep between a
#                     run's sections; shown, neither ranked nor the target row; convscope-spin,
#                     CONVSCOPE_ORT_ALLOW_SPINNING=true, is the default's twin, run when named)
#   torchserve-onnx  (TorchServe, custom handler on onnxruntime, frontend batching)
#   litserve-w1/-w2  (LitServe LitAPI, max_batch_size, batch_timeout; 1 / 2 worker processes)
#   pytriton         (nvidia-pytriton: tritonserver + python backend, dynamic batching)
#   bentoml          (BentoML service with adaptive batching)
#
# Every server: start alone on a free 127.0.0.1 port, wait until ready, send three requests
# with curl and check the top-1 class equals raw onnxruntime's, then for each concurrency a
# WARMUP-second wrk run (discarded) and a DURATION-second wrk run (measured; post_png.lua
# counts only 2xx answers whose body pins the same top-1 class), then stop it by its pid (and
# the pids of its session). One table at the end (stdout and RESULTS_DIR).
#
#   bash benchmarks/peers/same_run.sh                 # from the project root; ~20 min on 2 cores
#   MODELS=tinyvgg SYSTEMS="convscope litserve-w1" bash benchmarks/peers/same_run.sh
#
# The peers' venvs come from benchmarks/peers/setup_venvs.sh (once); a peer whose venv is
# missing is skipped and the table says so.
#
# Knobs (environment; no path of a particular machine is built in):
#   PROJECT=<convscope checkout>   default: the current directory (run it from the project root)
#   CS_PY=$PROJECT/.venv/bin/python  convscope's python; also prepares the models and runs
#                                  reference.py / raw_ort.py (needs torch, torchvision, onnx, onnxruntime)
#   VENV_DIR=${TMPDIR:-/tmp}/peer-venvs  peer venvs: litserve/, pytriton/, torchserve/, bentoml/
#   MODELS="alexnet tinyvgg"
#   SYSTEMS="convscope convscope-nospin torchserve-onnx litserve-w1 litserve-w2 pytriton bentoml"
#   CONCURRENCY="1 16"  DURATION=10  WARMUP=3  WRK_THREADS=2  WRK_TIMEOUT=30s
#   MAX_BATCH=16  BATCH_DELAY_MS=5  (peers' max batch and batch wait; convscope gets MAX_BATCH
#                                  as CONVSCOPE_MAX_BATCH_SIZE and otherwise its defaults)
#   CONVSCOPE_ENV="K=V ..."        extra settings for convscope (e.g. CONVSCOPE_ORT_ALLOW_SPINNING=true)
#   RAW_BATCHES="1 16"  RAW_DURATION=$DURATION
#   START_TIMEOUT=240   seconds a server may take to become ready
#   PREPARED_DIR=$PROJECT/benchmarks/out/peers/prepared  models and images, made once per model
#                       and reused (REFRESH=1 rebuilds them)
#   RESULTS_DIR=$PROJECT/benchmarks/out/peers/results  KEEP_WORK=0 (1: keep the temp dir with every log)
#   ORT_ALLOW_SPINNING=, ORT_THREADS=  read by the peers' sessions and raw_ort.py (common/ortpeer.py);
#                   unset = onnxruntime's defaults (convscope keeps its own settings: spinning on, stopped after each run)
#   SMOKE=0         1: no raw bench, no wrk: start each server, check one answer, stop it
#   ROUNDS=1        N > 1: the systems N times, a fresh server each time, in order on odd rounds
#                   and in reverse on even ones (A B, B A, A B, ...): this VM's speed drifts by
#                   +-20% within minutes, so one start per system is a sample of its minute.
#                   Each row is then the round with the median images/s, and the targets compare
#                   convscope with each peer round by round (the median of the per-round ratios).
#                   Raw onnxruntime takes a turn in every round too (first, then last, ...): the
#                   ceiling of each round's minute, which the raw targets are judged against
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="${PROJECT:-$PWD}"
CS_PY="${CS_PY:-$PROJECT/.venv/bin/python}"
VENV_DIR="${VENV_DIR:-${TMPDIR:-/tmp}/peer-venvs}"
MODELS="${MODELS:-alexnet tinyvgg}"
SYSTEMS="${SYSTEMS:-convscope convscope-nospin torchserve-onnx litserve-w1 litserve-w2 pytriton bentoml}"
CONCURRENCY="${CONCURRENCY:-1 16}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
WRK_THREADS="${WRK_THREADS:-2}"
WRK_TIMEOUT="${WRK_TIMEOUT:-30s}"
MAX_BATCH="${MAX_BATCH:-16}"
BATCH_DELAY_MS="${BATCH_DELAY_MS:-5}"
CONVSCOPE_ENV="${CONVSCOPE_ENV:-}"
RAW_BATCHES="${RAW_BATCHES-1 16}"
RAW_DURATION="${RAW_DURATION:-$DURATION}"
START_TIMEOUT="${START_TIMEOUT:-240}"
PREPARED_DIR="${PREPARED_DIR:-$PROJECT/benchmarks/out/peers/prepared}"
REFRESH="${REFRESH:-0}"
RESULTS_DIR="${RESULTS_DIR:-$PROJECT/benchmarks/out/peers/results}"
KEEP_WORK="${KEEP_WORK:-0}"
SMOKE="${SMOKE:-0}"
ROUNDS="${ROUNDS:-1}"
ROUND_TAG=""   # ".r<k>" in result file names when ROUNDS > 1

START_EPOCH=$(date +%s)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
log() { printf '[%s +%4ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - START_EPOCH ))" "$*" >&2; }
die() { log "ERROR: $*"; [[ -n "${RES:-}" && -d "${RES:-}" ]] && echo "${SERVER_NAME:-${CURRENT:-setup}}: $*" >>"$RES/errors.txt"; exit 1; }

[[ -x "$CS_PY" ]] || die "no python at $CS_PY (set PROJECT or CS_PY)"
command -v wrk >/dev/null || die "wrk not found (Debian package wrk)"
command -v curl >/dev/null || die "curl not found"

WORK="$(mktemp -d -t samerun.XXXXXX)"
RES_ROOT="$WORK/res"   # one directory per model: $RES_ROOT/<model>/
RES="$RES_ROOT"
mkdir -p "$RES" "$RESULTS_DIR"
SERVER_PID=""   # first pid to signal
SERVER_SID=""   # session id of everything the server started (setsid)
SERVER_NAME=""

session_pids() { ps -eo pid=,sid= | awk -v s="$1" '$2 == s { print $1 }'; }
# tree_pids SID: the session's processes, their descendants, and the sessions those created
# (BentoML's worker calls setsid), as "pid:starttime" so that a reused pid is never signalled
tree_pids() {
  ps -eo pid=,ppid=,sid= | awk -v s="$1" '
    { pid[NR] = $1; ppid[NR] = $2; sid[NR] = $3 }
    END {
      inset[s] = 1; sids[s] = 1; changed = 1
      while (changed) {
        changed = 0
        for (i = 1; i <= NR; i++) if (!(pid[i] in inset) && (sid[i] in sids || ppid[i] in inset)) {
          inset[pid[i]] = 1; sids[sid[i]] = 1; changed = 1
        }
      }
      for (i = 1; i <= NR; i++) if (pid[i] in inset) print pid[i]
    }' | while read -r p; do
      st=$(awk '{ print $22 }' "/proc/$p/stat" 2>/dev/null) && echo "$p:$st"
    done
}
alive_of() {  # the "pid:starttime" entries still running as that same process
  local e p st
  for e in $1; do
    p=${e%%:*}; st=$(awk '{ print $22 }' "/proc/$p/stat" 2>/dev/null) || continue
    [[ "$st" == "${e#*:}" ]] && echo "$e"
  done
}
CURRENT_FILE="$WORK/current_server"   # "pid sid name" of the server running now (for cleanup)

stop_server() {
  [[ -n "$SERVER_SID" ]] || return 0
  local pid="$SERVER_PID" sid="$SERVER_SID" procs left e attempt
  procs="$(tree_pids "$sid")"
  log "stopping $SERVER_NAME: pid $pid; its processes: $(echo $procs | sed 's/:[0-9]*//g')"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  # what the main process left behind (LitServe's workers survive its SIGTERM): each by pid
  for attempt in TERM TERM KILL; do
    left="$(alive_of "$(printf '%s\n' $procs $(tree_pids "$sid") | sort -u)")"
    [[ -n "$left" ]] || break
    log "  $attempt to what is left: $(echo $left | sed 's/:[0-9]*//g')"
    for e in $left; do kill -"$attempt" "${e%%:*}" 2>/dev/null || true; done
    for _ in $(seq 1 20); do [[ -z "$(alive_of "$left")" ]] && break; sleep 0.5; done
  done
  wait "$sid" 2>/dev/null || true
  rm -f "$CURRENT_FILE"
  SERVER_PID="" SERVER_SID="" SERVER_NAME=""
}

SUB=""
cleanup() {
  local rc=$?
  set +e
  if [[ -n "$SUB" ]] && kill -0 "$SUB" 2>/dev/null; then kill -TERM "$SUB" 2>/dev/null; wait "$SUB" 2>/dev/null; fi
  [[ -z "$SERVER_SID" && -s "$CURRENT_FILE" ]] && read -r SERVER_PID SERVER_SID SERVER_NAME <"$CURRENT_FILE"
  stop_server
  if [[ "$KEEP_WORK" == 1 || $rc -ne 0 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$CS_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_bg NAME LOGFILE CMD...: run CMD in a new session (setsid: its pid is the session id)
start_bg() {
  local name="$1" logf="$2"; shift 2
  # TMPDIR inside the work dir: what a server leaves there (multiprocessing's pymp-* dirs,
  # PyTriton's model store) goes with it
  mkdir -p "$WORK/tmp-$name"
  setsid env TMPDIR="$WORK/tmp-$name" "$@" >"$logf" 2>&1 </dev/null &
  SERVER_PID=$! SERVER_SID=$! SERVER_NAME="$name"
  echo "$SERVER_PID $SERVER_SID $SERVER_NAME" >"$CURRENT_FILE"
  log "started $name: pid $SERVER_PID"
}

wait_ready() {  # URL [grep pattern]: until GET URL answers 200 (and matches)
  local url="$1" pat="${2:-}" t0; t0=$(date +%s)
  while true; do
    if [[ -z "$pat" ]]; then curl -sf -m 3 -o /dev/null "$url" 2>/dev/null && break
    else curl -sf -m 3 "$url" 2>/dev/null | grep -q "$pat" && break; fi
    [[ -n "$SERVER_PID" ]] && ! kill -0 "$SERVER_PID" 2>/dev/null && [[ -z "$(session_pids "$SERVER_SID")" ]] \
      && return 1
    (( $(date +%s) - t0 < START_TIMEOUT )) || return 1
    sleep 0.5
  done
  log "$SERVER_NAME ready after $(( $(date +%s) - t0 ))s"
}

cpu_jiffies() { awk '/^cpu /{ busy=$2+$3+$4+$7+$8+$9; print busy, busy+$5+$6 }' /proc/stat; }
server_cpu_ticks() {  # utime+stime of every process of the server (tree_pids of session $1)
  local t=0 e v
  for e in $(tree_pids "$1"); do
    v=$(awk '{ print $14 + $15 }' "/proc/${e%%:*}/stat" 2>/dev/null || echo 0); t=$(( t + v ))
  done
  echo $t
}

# images and onnxruntime runs so far, from convscope's /metrics (DRIVE_METRICS: its URL)
batch_counts() {
  [[ -n "${DRIVE_METRICS:-}" ]] || { echo "0 0"; return 0; }
  curl -s -m 5 "$DRIVE_METRICS" | awk '
    /^convscope_inference_count_total[{ ]/ { i += $NF }
    /^convscope_inference_exec_count_total[{ ]/ { r += $NF }
    END { printf "%d %d\n", i, r }'
}

# drive NAME URL BODY CT HEADERS EXPECT: warm-up + measured wrk run per concurrency
drive() {
  local name="$1" url="$2" body="$3" ct="$4" hdrs="$5" expect="$6" c t b0 a0 s0 b1 a1 s1 i0 r0 i1 r1
  [[ "$SMOKE" == 1 ]] && return 0
  for c in $CONCURRENCY; do
    t=$(( c < WRK_THREADS ? c : WRK_THREADS ))
    log "  $name c=$c: ${WARMUP}s warm-up, ${DURATION}s measured (wrk -t$t -c$c)"
    WRK_BODY="$body" WRK_CT="$ct" WRK_HEADERS="$hdrs" WRK_EXPECT="$expect" WRK_OUT="$WORK/warm.json" \
      timeout $(( WARMUP + 60 )) wrk -t"$t" -c"$c" -d"${WARMUP}s" --timeout "$WRK_TIMEOUT" \
      -s "$HERE/post_png.lua" "$url" >"$WORK/wrk_${name}_c${c}_warm.txt" 2>&1 \
      || die "wrk warm-up failed for $name c=$c"
    read -r i0 r0 < <(batch_counts)
    read -r b0 a0 < <(cpu_jiffies); s0=$(server_cpu_ticks "$SERVER_SID")
    WRK_BODY="$body" WRK_CT="$ct" WRK_HEADERS="$hdrs" WRK_EXPECT="$expect" WRK_OUT="$RES/wrk_${name}_c${c}${ROUND_TAG}.json" \
      timeout $(( DURATION + 60 )) wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" \
      -s "$HERE/post_png.lua" "$url" >"$WORK/wrk_${name}_c${c}.txt" 2>&1 \
      || die "wrk failed for $name c=$c"
    read -r b1 a1 < <(cpu_jiffies); s1=$(server_cpu_ticks "$SERVER_SID")
    read -r i1 r1 < <(batch_counts)
    "$CS_PY" - "$RES/wrk_${name}_c${c}${ROUND_TAG}.json" "$name" "$c" "$b0" "$a0" "$b1" "$a1" "$s0" "$s1" "$(getconf CLK_TCK)" \
      "$i0" "$r0" "$i1" "$r1" "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF'
import json, sys
path, name, c = sys.argv[1:4]
b0, a0, b1, a1, s0, s1, hz, i0, r0, i1, r1 = (int(v) for v in sys.argv[4:15])
r = json.loads(open(path).read())
dur = r["duration_s"]
r.update(system=name, concurrency=int(c), images_per_s=round(r["ok"] / dur, 2),
         machine_busy_cores=round((b1 - b0) / hz / dur, 2), server_cpu_cores=round((s1 - s0) / hz / dur, 2),
         load_avg_1m=float(sys.argv[15]))
r["server_cpu_ms_per_image"] = round(r["server_cpu_cores"] * 1000 / r["images_per_s"], 2) if r["images_per_s"] else None
if r1 > r0:  # convscope: images per onnxruntime run during the point
    r["mean_batch"] = round((i1 - i0) / (r1 - r0), 2)
open(path, "w").write(json.dumps(r) + "\n")
print(f'    {name} c={c}: {r["images_per_s"]} img/s ok={r["ok"]} wrong={r["wrong_body"]} non2xx={r["non2xx"]} '
      f'timeouts={r["err_timeout"]} p50={r["lat_p50_ms"]} p99={r["lat_p99_ms"]} ms; '
      f'server {r["server_cpu_cores"]} cores ({r["server_cpu_ms_per_image"]} ms/img), '
      f'machine {r["machine_busy_cores"]} cores busy' + (f', mean batch {r["mean_batch"]}' if "mean_batch" in r else ""),
      file=sys.stderr)
EOF
  done
}

# sample NAME KIND URL BODY CT HEADERS -> sets EXPECT (dies when the answer is wrong)
sample() {
  local name="$1" kind="$2" url="$3" body="$4" ct="$5" hdrs="$6" code i
  local args=(-s -m 60 -o "$RES/sample_${name}.json" -w '%{http_code}' -H "Content-Type: $ct" --data-binary "@$body")
  local IFS_OLD="$IFS"; IFS='|'; for h in $hdrs; do [[ -n "$h" ]] && args+=(-H "$h"); done; IFS="$IFS_OLD"
  for i in 1 2 3; do  # the first answers also warm the server up
    code=$(curl "${args[@]}" "$url" || echo 000)
    [[ "$code" == 200 ]] || die "$name: sample request answered HTTP $code: $(head -c 400 "$RES/sample_${name}.json" 2>/dev/null)"
  done
  EXPECT=$("$CS_PY" "$HERE/common/check_response.py" --kind "$kind" --top1 "$TOP1" --label "$TOP1_LABEL" \
    "$RES/sample_${name}.json") || die "$name: wrong answer (see above)"
  [[ -n "$EXPECT" ]] || die "$name: no fixed substring pins the top-1 class in its answer; refusing an unchecked run"
  log "$name: sample answer HTTP 200, top-1 class $TOP1 = raw onnxruntime's; wrk checks every answer for: $EXPECT"
}

meta() {  # NAME JSON-OBJECT
  echo "$2" >"$RES/meta_$1.json"
}

pyver() {  # VENV_PY MODULE...: versions as JSON
  "$1" - "${@:2}" <<'EOF'
import json, sys
from importlib.metadata import version, PackageNotFoundError
out = {}
for m in sys.argv[1:]:
    try:
        out[m] = version(m)
    except PackageNotFoundError:
        out[m] = None
out["python"] = sys.version.split()[0]
print(json.dumps(out))
EOF
}

command -v jq >/dev/null || die "jq not found"


# ------------------------------------------------------------------ per model: model, image, reference
# prepare_model MODEL -> sets MDIR (model.onnx, input.png, prepare.json, models/ = convscope's
# repository, spec.json), CS_MODEL (the name convscope and the peers serve it as)
prepare_model() {
  local key="$1" done_file
  MDIR="$PREPARED_DIR/$key"
  done_file="$MDIR/.prepared"
  if [[ "$REFRESH" == 1 || ! -f "$done_file" ]]; then
    rm -rf "$MDIR"; mkdir -p "$MDIR"
    log "$key: preparing the model and image in $MDIR"
    case "$key" in
      alexnet)
        timeout 900 "$CS_PY" "$HERE/prepare_alexnet.py" "$MDIR" >"$MDIR/prepare.log" 2>&1 \
          || { tail -n 20 "$MDIR/prepare.log" >&2; die "prepare_alexnet.py failed"; }
        for i in $(seq 0 9); do echo "class$i"; done >"$MDIR/labels.txt"
        (cd "$PROJECT" && timeout 600 "$CS_PY" -m model_export import "$MDIR/model.onnx" --name alexnet10 \
           --labels "$MDIR/labels.txt" --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --size 224 224 \
           --out "$MDIR/models" --quiet) >>"$MDIR/prepare.log" 2>&1 \
           || { tail -n 20 "$MDIR/prepare.log" >&2; die "convscope import failed"; }
        ;;
      tinyvgg)
        (cd "$PROJECT" && timeout 900 "$CS_PY" "$HERE/prepare_tinyvgg.py" "$MDIR") >"$MDIR/prepare.log" 2>&1 \
          || { tail -n 20 "$MDIR/prepare.log" >&2; die "prepare_tinyvgg.py failed"; }
        ;;
      *) die "unknown model $key (MODELS: alexnet tinyvgg)" ;;
    esac
    local artifact; artifact=$(ls -d "$MDIR"/models/*/1 | head -n1)
    "$CS_PY" "$HERE/common/spec.py" "$artifact" "$MDIR/spec.json" >/dev/null || die "spec.py failed"
    touch "$done_file"
  else
    log "$key: reusing $MDIR (REFRESH=1 rebuilds it)"
  fi
  CS_MODEL=$("$CS_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["model"])' "$MDIR/spec.json")
}

# ------------------------------------------------------------------ the servers, one at a time
run_convscope() {  # $1 the row's name, $2 extra settings for this row (on top of CONVSCOPE_ENV)
  local name="${1:-convscope}" extra="${2:-}" port
  port=$(free_port)
  # shellcheck disable=SC2086
  start_bg "$name" "$WORK/$name.log" env -C "$PROJECT" CONVSCOPE_MODEL_REPOSITORY="$MDIR/models" \
    CONVSCOPE_MAX_BATCH_SIZE="$MAX_BATCH" CONVSCOPE_LOG_LEVEL=warning $CONVSCOPE_ENV $extra \
    "$CS_PY" -m service --host 127.0.0.1 --port "$port"
  wait_ready "http://127.0.0.1:$port/readyz" || { tail -n 30 "$WORK/$name.log" >&2; die "$name did not become ready"; }
  local url="http://127.0.0.1:$port/v1/models/$CS_MODEL/predict" settings="$CONVSCOPE_ENV${extra:+ $extra}"
  sample "$name" convscope "$url" "$PNG" image/png ""
  meta "$name" "$(jq -nc --argjson v "$(pyver "$CS_PY" onnxruntime numpy pillow fastapi uvicorn)" \
    --arg rev "$(git -C "$PROJECT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    --arg b "max_batch_size $MAX_BATCH (CONVSCOPE_MAX_BATCH_SIZE), otherwise its defaults${settings:+; $settings}" \
    '{versions: ($v + {convscope: $rev}), batching: $b, body: "raw PNG, Content-Type image/png", processes: 1}')"
  DRIVE_METRICS="http://127.0.0.1:$port/metrics" drive "$name" "$url" "$PNG" image/png "" "$EXPECT"
  stop_server
}

run_litserve() {  # $1 workers per device
  local w="$1" name="litserve-w$1" py="$VENV_DIR/litserve/bin/python" port
  [[ -x "$py" ]] || { log "$name: no venv at $VENV_DIR/litserve; skipped"; echo "$name: skipped, no venv" >>"$RES/errors.txt"; return 0; }
  port=$(free_port)
  start_bg "$name" "$WORK/$name.log" env PEER_SPEC="$MDIR/spec.json" "$py" "$HERE/litserve/server.py" \
    --onnx "$MDIR/model.onnx" --port "$port" --workers-per-device "$w" --max-batch-size "$MAX_BATCH" \
    --batch-timeout "$(awk -v d="$BATCH_DELAY_MS" 'BEGIN{print d/1000}')"
  wait_ready "http://127.0.0.1:$port/health" || { tail -n 30 "$WORK/$name.log" >&2; die "$name did not become ready"; }
  local url="http://127.0.0.1:$port/predict"
  sample "$name" litserve "$url" "$WORK/litserve_body.json" application/json ""
  meta "$name" "$(jq -nc --argjson v "$(pyver "$py" onnxruntime numpy pillow litserve fastapi uvicorn)" --argjson w "$w" \
    --arg b "LitAPI max_batch_size $MAX_BATCH, batch_timeout $BATCH_DELAY_MS ms, workers_per_device $w (accelerator cpu, 1 device, num_api_servers default = $w)" \
    '{versions: $v, batching: $b, body: "JSON {\"image\": base64 PNG}, Content-Type application/json (LitServe parses JSON or forms, no raw body)", processes: (1 + 2 * $w)}')"
  drive "$name" "$url" "$WORK/litserve_body.json" application/json "" "$EXPECT"
  stop_server
}

run_pytriton() {
  local py="$VENV_DIR/pytriton/bin/python" ph pg pm
  [[ -x "$py" ]] || { log "pytriton: no venv at $VENV_DIR/pytriton; skipped"; echo "pytriton: skipped, no venv" >>"$RES/errors.txt"; return 0; }
  ph=$(free_port); pg=$(free_port); pm=$(free_port)
  while [[ "$pg" == "$ph" ]]; do pg=$(free_port); done
  while [[ "$pm" == "$ph" || "$pm" == "$pg" ]]; do pm=$(free_port); done
  start_bg pytriton "$WORK/pytriton.log" env PEER_SPEC="$MDIR/spec.json" "$py" "$HERE/pytriton/server.py" \
    --onnx "$MDIR/model.onnx" --model-name "$CS_MODEL" \
    --http-port "$ph" --grpc-port "$pg" --metrics-port "$pm" --workspace "$WORK/pytriton-ws-$MODEL_KEY" \
    --max-batch-size "$MAX_BATCH" --max-queue-delay-us $(( BATCH_DELAY_MS * 1000 ))
  if ! wait_ready "http://127.0.0.1:$ph/v2/models/$CS_MODEL/ready"; then
    log "pytriton did not start; its log:"; tail -n 40 "$WORK/pytriton.log" >&2
    cp "$WORK/pytriton.log" "$RES/pytriton_start_error.log"
    echo "pytriton: did not start (pytriton_start_error.log)" >>"$RES/errors.txt"
    stop_server; return 0
  fi
  local url="http://127.0.0.1:$ph/v2/models/$CS_MODEL/infer" hdr="Inference-Header-Content-Length: $PT_HDR_LEN"
  sample pytriton pytriton "$url" "$WORK/pytriton_body.bin" application/octet-stream "$hdr"
  local tv; tv=$(curl -s -m 5 "http://127.0.0.1:$ph/v2" | jq -r .version 2>/dev/null || echo '?')
  meta pytriton "$(jq -nc --argjson v "$(pyver "$py" onnxruntime numpy pillow nvidia-pytriton tritonclient)" --arg tv "$tv" \
    --arg b "ModelConfig max_batch_size $MAX_BATCH, DynamicBatcher max_queue_delay_microseconds $(( BATCH_DELAY_MS * 1000 )), 1 instance, @batch infer_fn" \
    '{versions: ($v + {tritonserver: $tv}), batching: $b, body: "KServe v2 HTTP, binary tensor extension: JSON header + BYTES tensor (4-byte length + PNG); outputs as JSON", processes: 3}')"
  drive pytriton "$url" "$WORK/pytriton_body.bin" application/octet-stream "$hdr" "$EXPECT"
  stop_server
}

run_torchserve_onnx() {
  local venv="$VENV_DIR/torchserve" py
  py="$venv/bin/python"
  if [[ ! -x "$venv/bin/torchserve" || ! -x "$venv/bin/torch-model-archiver" ]]; then
    log "torchserve-onnx: no torchserve venv at $venv; skipped"; echo "torchserve-onnx: skipped, no venv" >>"$RES/errors.txt"; return 0
  fi
  command -v java >/dev/null || { log "torchserve-onnx: java not found; skipped"; echo "torchserve-onnx: skipped, no java" >>"$RES/errors.txt"; return 0; }
  local ts p_inf p_mgmt p_met
  ts="$(mktemp -d "$WORK/ts-$MODEL_KEY.XXXXXX")"  # fresh per start: the archiver will not overwrite a model
  mkdir -p "$ts/store" "$ts/logs" "$ts/extra"
  cp "$HERE/common/ortpeer.py" "$MDIR/spec.json" "$ts/extra/"
  timeout 600 "$venv/bin/torch-model-archiver" --model-name "$CS_MODEL" --version 1.0 \
    --serialized-file "$MDIR/model.onnx" --handler "$HERE/torchserve-onnx/handler.py" \
    --extra-files "$ts/extra/ortpeer.py,$ts/extra/spec.json" --export-path "$ts/store" --archive-format no-archive \
    || die "torch-model-archiver failed"
  p_inf=$(free_port); p_mgmt=$(free_port); p_met=$(free_port)
  cat >"$ts/config.properties" <<EOF
inference_address=http://127.0.0.1:$p_inf
management_address=http://127.0.0.1:$p_mgmt
metrics_address=http://127.0.0.1:$p_met
grpc_inference_address=127.0.0.1
grpc_management_address=127.0.0.1
grpc_inference_port=$(free_port)
grpc_management_port=$(free_port)
initial_worker_port=$(free_port)
disable_token_authorization=true
enable_model_api=true
enable_metrics_api=false
disable_system_metrics=true
metrics_mode=prometheus
async_logging=true
default_workers_per_model=1
model_store=$ts/store
install_py_dep_per_model=false
enable_envvars_config=false
vmargs=-XX:-UsePerfData
EOF
  # TorchServe daemonizes its java frontend: the launcher's session (setsid) holds the java
  # process and its python worker; TMPDIR keeps its pid file and sockets in $ts.
  start_bg torchserve-onnx "$ts/ts.out" env -C "$ts" TMPDIR="$ts" LOG_LOCATION="$ts/logs" METRICS_LOCATION="$ts/logs" \
    PATH="$venv/bin:$PATH" "$venv/bin/torchserve" --start --foreground --ncs --disable-token-auth \
    --ts-config "$ts/config.properties" --model-store "$ts/store" --log-config "$HERE/torchserve-onnx/log4j2-quiet.xml"
  wait_ready "http://127.0.0.1:$p_inf/ping" Healthy || { tail -n 30 "$ts/ts.out" "$ts"/logs/*.log >&2; die "TorchServe not healthy"; }
  curl -sf -m 600 -X POST "http://127.0.0.1:$p_mgmt/models?url=$CS_MODEL&model_name=$CS_MODEL&batch_size=$MAX_BATCH&max_batch_delay=$BATCH_DELAY_MS&initial_workers=1&synchronous=true&response_timeout=120" \
    >"$ts/register.out" || { cat "$ts/register.out" >&2; tail -n 30 "$ts"/logs/*.log >&2; die "TorchServe register failed"; }
  local url="http://127.0.0.1:$p_inf/predictions/$CS_MODEL"
  sample torchserve-onnx torchserve "$url" "$PNG" image/png ""
  meta torchserve-onnx "$(jq -nc --argjson v "$(pyver "$py" onnxruntime numpy pillow torchserve torch)" \
    --arg j "$(java -XX:-UsePerfData -version 2>&1 | head -n1)" \
    --arg b "batch_size $MAX_BATCH, max_batch_delay $BATCH_DELAY_MS ms, 1 worker, custom handler (onnxruntime, ortpeer.py)" \
    '{versions: ($v + {java: $j}), batching: $b, body: "raw PNG, Content-Type image/png", processes: 2}')"
  drive torchserve-onnx "$url" "$PNG" image/png "" "$EXPECT"
  stop_server
}

run_bentoml() {
  local venv="$VENV_DIR/bentoml" port
  [[ -x "$venv/bin/bentoml" ]] || { log "bentoml: no venv at $venv; skipped"; echo "bentoml: skipped, no venv" >>"$RES/errors.txt"; return 0; }
  port=$(free_port)
  start_bg bentoml "$WORK/bentoml.log" env -C "$HERE/bentoml" BENTOML_HOME="$WORK/bentoml-home" BENTOML_DO_NOT_TRACK=True \
    PEER_ONNX="$MDIR/model.onnx" PEER_SPEC="$MDIR/spec.json" MAX_BATCH="$MAX_BATCH" \
    "$venv/bin/bentoml" serve service:Classifier --host 127.0.0.1 --port "$port"
  wait_ready "http://127.0.0.1:$port/readyz" || { tail -n 30 "$WORK/bentoml.log" >&2; die "bentoml did not become ready"; }
  local url="http://127.0.0.1:$port/predict" ct
  ct=$("$CS_PY" "$HERE/common/multipart_body.py" "$PNG" images "$WORK/bentoml_body.bin")
  sample bentoml bentoml "$url" "$WORK/bentoml_body.bin" "$ct" ""
  meta bentoml "$(jq -nc --argjson v "$(pyver "$venv/bin/python" onnxruntime numpy pillow bentoml)" \
    --arg b "@bentoml.api(batchable=True, max_batch_size=$MAX_BATCH, max_latency_ms=1000) adaptive batching (no fixed wait knob), 1 worker, access log off" \
    '{versions: $v, batching: $b, body: "multipart/form-data, one part \"images\" = the PNG (BentoML parses JSON or forms, no raw body)", processes: 2}')"
  drive bentoml "$url" "$WORK/bentoml_body.bin" "$ct" "" "$EXPECT"
  stop_server
}

run_system() {  # in its own subshell: a failing peer is recorded and the run goes on
  set -e
  CURRENT="$1"
  trap 'stop_server' EXIT
  trap 'exit 143' TERM INT
  case "$1" in
    convscope) run_convscope convscope ;;
    convscope-spin) run_convscope convscope-spin CONVSCOPE_ORT_ALLOW_SPINNING=true ;;
    convscope-nospin) run_convscope convscope-nospin CONVSCOPE_ORT_ALLOW_SPINNING=false ;;
    torchserve-onnx) run_torchserve_onnx ;;
    litserve-w[0-9]*) run_litserve "${1#litserve-w}" ;;
    pytriton) run_pytriton ;;
    bentoml) run_bentoml ;;
    *) die "unknown system $1" ;;
  esac
}

run_raw() {  # raw onnxruntime in-process, nothing else running: raw.json, or raw.r<N>.json in round N
  [[ "$SMOKE" != 1 && -n "${RAW_BATCHES// /}" ]] || return 0
  log "$MODEL_KEY: raw onnxruntime in-process, batches: $RAW_BATCHES, ${RAW_DURATION}s each"
  timeout 900 "$CS_PY" "$HERE/raw_ort.py" --onnx "$MDIR/model.onnx" \
    --batches "$RAW_BATCHES" --duration "$RAW_DURATION" --json "$RES/raw${ROUND_TAG}.json" >&2 || die "raw_ort.py failed"
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "work dir $WORK; models: $MODELS; systems: $SYSTEMS; concurrency: $CONCURRENCY; ${WARMUP}s + ${DURATION}s per point; load average $LOAD_START"
for MODEL_KEY in $MODELS; do
  RES="$RES_ROOT/$MODEL_KEY"; mkdir -p "$RES"
  prepare_model "$MODEL_KEY"
  cp "$MDIR/prepare.json" "$RES/prepare.json"; cp "$MDIR/spec.json" "$RES/spec.json"
  export PEER_SPEC="$MDIR/spec.json"   # reference.py and raw_ort.py read it too
  PNG="$MDIR/input.png"
  "$CS_PY" "$HERE/common/reference.py" --onnx "$MDIR/model.onnx" --png "$PNG" >"$RES/reference.json" || die "reference failed"
  TOP1=$(jq -r .top1 "$RES/reference.json"); TOP1_LABEL=$(jq -r .label "$RES/reference.json")
  log "$MODEL_KEY ($CS_MODEL): raw onnxruntime top-1 for the image: class $TOP1 \"$TOP1_LABEL\" ($(head -c 160 "$RES/reference.json")...)"
  # request bodies
  "$CS_PY" - "$PNG" "$WORK/litserve_body.json" <<'EOF'
import base64, json, sys
png = open(sys.argv[1], "rb").read()
open(sys.argv[2], "w").write(json.dumps({"image": base64.b64encode(png).decode()}))
EOF
  PT_HDR_LEN=$("$CS_PY" "$HERE/pytriton/make_body.py" "$PNG" "$WORK/pytriton_body.bin")

  (( ROUNDS > 1 )) || run_raw  # with rounds, raw onnxruntime takes its turn in each of them
  for (( round = 1; round <= ROUNDS; round++ )); do
    order="$SYSTEMS"
    (( round % 2 == 0 )) && order="$(printf '%s\n' $SYSTEMS | tac | tr '\n' ' ')"
    if (( ROUNDS > 1 )); then
      ROUND_TAG=".r$round"; log "$MODEL_KEY: round $round of $ROUNDS: $order"
      # The ceiling of this round's minute: first in odd rounds, last in even ones, as the systems.
      order="raw $order"; (( round % 2 == 0 )) && order="${order#raw } raw"
    fi
    for s in $order; do
      if [[ "$s" == raw ]]; then run_raw; continue; fi
      set +e
      ( run_system "$s" ) &
      SUB=$!
      wait "$SUB"; rc=$?
      SUB=""
      set -e
      [[ $rc -eq 0 ]] || { log "$MODEL_KEY: $s FAILED (rc=$rc); going on with the next system"; echo "$s${ROUND_TAG}: FAILED (rc=$rc)" >>"$RES/errors.txt"; }
    done
  done
  ROUND_TAG=""
done
RES="$RES_ROOT"

ELAPSED=$(( $(date +%s) - START_EPOCH ))
jq -nc --arg stamp "$STAMP" --argjson el "$ELAPSED" --arg conc "$CONCURRENCY" --argjson dur "$DURATION" \
  --argjson warm "$WARMUP" --argjson wt "$WRK_THREADS" --arg wrk "$(wrk -v 2>&1 | head -n1)" \
  --arg peer_ort "ORT_ALLOW_SPINNING=${ORT_ALLOW_SPINNING:-default} ORT_THREADS=${ORT_THREADS:-default}" \
  --arg models "$MODELS" --argjson rounds "$ROUNDS" --argjson mb "$MAX_BATCH" --argjson bd "$BATCH_DELAY_MS" \
  --arg l0 "$LOAD_START" --arg l1 "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --argjson nproc "$(nproc)" --arg kernel "$(uname -r)" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
  '{stamp: $stamp, elapsed_s: $el, models: $models, concurrency: $conc, duration_s: $dur, warmup_s: $warm, wrk_threads: $wt,
    wrk: $wrk, peer_ort: $peer_ort, rounds: $rounds, max_batch: $mb, batch_delay_ms: $bd, load_avg_start: $l0, load_avg_end: $l1,
    nproc: $nproc, kernel: $kernel, cpu: $cpu}' >"$RES/meta.json"
[[ "$SMOKE" == 1 ]] && { log "SMOKE=1 done in ${ELAPSED}s: $(ls -R "$RES" | tr '\n' ' ')"; cat "$RES"/*/errors.txt 2>/dev/null || true; exit 0; }
"$CS_PY" "$HERE/report.py" "$RES" --json-out "$RESULTS_DIR/same_run-$STAMP.json" | tee "$RESULTS_DIR/same_run-$STAMP.md"
log "done in ${ELAPSED}s; results in $RESULTS_DIR/same_run-$STAMP.{md,json}"
