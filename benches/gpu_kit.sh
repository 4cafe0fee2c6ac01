#!/usr/bin/env bash
# Carries what benches/gpu_e2e.py needs to a GPU machine that has PyTorch but no network, no
# Rust, no GStreamer and only the CPU onnxruntime, in pieces small enough for a 64 MiB upload.
#
#   benches/gpu_kit.sh stage [--part-mib N]   here (network, a release build): writes .gpukit/
#       app.tar.xz     the stripped sapiens-stream binary and the shared libraries it links
#                      (GStreamer core, GLib, ...): the image-folder input needs no plugins
#       ort.part-NN    onnxruntime-gpu (the version scripts/requirements.txt pins) for CPython
#                      3.12, unzipped and recompressed as one xz stream (a fifth smaller than the
#                      wheel: one call fewer), split; a CUDA 13 build that uses torch's CUDA libraries
#       MANIFEST       names and sha256 sums; then prints which pieces to carry in which call
#   benches/gpu_kit.sh run [gpu_e2e.py options]   there: checks and unpacks the pieces into
#       /tmp/gpukit and runs benches/gpu_e2e.py with them; results in $OUT/gpu-e2e when $OUT is
#       set (the device tool), else bench-results/gpu-e2e-<UTC time>
#   benches/gpu_kit.sh checks   there, after the pieces are unpacked: the GPU tests (kernels
#       against the CPU path, device frames against the host path: tests/gpu.rs) and the GPU
#       bench (kernel microseconds, device path beside host path: benches/gpu.rs), both carried
#       in app.tar.xz; output in $OUT/gpu-checks (or bench-results/gpu-checks-<UTC time>)
#   benches/gpu_kit.sh streams   there, after the pieces are unpacked: N streams in one process
#       beside N processes (benches/streams.py) on the GPU: the 0.3b pose308 fp16 model with fused
#       attention (STREAMS_ARCH), 1080p frames, the whole frame one person, N = STREAMS_COUNTS
#       (1,2,4,8), STREAMS_FRAMES (200) frames a stream; output in $OUT/gpu-streams
#   benches/gpu_kit.sh session [SECONDS [STEP...]]   there, with every piece carried: the GPU
#       programme in one call, most wanted first, each step cut to fit SECONDS (default 540):
#       the program end to end (0.3b pose308 fp32), checks, PyTorch beside it, fp16, fp16 with
#       fused attention, Sapiens2 (SESSION_STEPS; name some to run only those);
#       all results packed into $OUT/gpu-session.tar.gz after every step, so a cut-off call
#       still brings back what ran
#
# The pieces are ignored by git (.gitignore) and reach the other machine only through `carry`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="$ROOT/.gpukit"
WORK="${GPUKIT_WORK:-/tmp/gpukit}"
die() { echo "error: $*" >&2; exit 2; }

stage() {
    local part_mib=56 bin="${BIN:-$ROOT/target/release/sapiens-stream}"
    while [ $# -gt 0 ]; do
        case "$1" in
            --part-mib) part_mib="$2"; shift 2 ;;
            *) die "stage: unknown option $1" ;;
        esac
    done
    [ -x "$bin" ] || die "no binary at $bin: run 'cargo build --release' (or set BIN=PATH)"
    git -C "$ROOT" check-ignore -q .gpukit/MANIFEST || die ".gpukit is not ignored by git: it must never be committed"
    local version
    version="$(sed -n 's/^onnxruntime==//p' "$ROOT/scripts/requirements.txt")"
    [ -n "$version" ] || die "no onnxruntime==VERSION in scripts/requirements.txt"

    rm -rf "$KIT" && mkdir -p "$KIT"
    local tmp; tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' RETURN
    mkdir -p "$tmp/app/bin" "$tmp/app/lib"
    cp "$bin" "$tmp/app/bin/sapiens-stream"
    strip --strip-debug "$tmp/app/bin/sapiens-stream"
    # Every library the binary links except glibc's own and the C++ runtime, which any Linux has.
    ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
        case "$(basename "$lib")" in
            libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|ld-linux*|libgcc_s.so.*|libstdc++.so.*) ;;
            *) cp -L "$lib" "$tmp/app/lib/" ;;
        esac
    done
    # The GPU test and bench binaries: no GStreamer, ONNX Runtime and CUDA loaded at run time.
    local built
    # (`cargo bench` builds with the release profile by itself and takes no --release.)
    for built in "test --test gpu --release" "bench --bench gpu"; do
        local exe
        # shellcheck disable=SC2086
        exe="$(cd "$ROOT" && cargo $built --no-default-features --no-run --message-format=json 2>/dev/null \
            | python3 -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')"
        [ -x "$exe" ] || die "cargo $built --no-run gave no executable"
        cp "$exe" "$tmp/app/bin/gpu-${built%% *}"
        strip --strip-debug "$tmp/app/bin/gpu-${built%% *}"
    done
    tar -C "$tmp" -cJf "$KIT/app.tar.xz" app

    local cache="${GPUKIT_CACHE:-/tmp/gpukit-cache}"
    mkdir -p "$cache"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$cache" "onnxruntime-gpu==$version"
    local wheel; wheel="$(ls "$cache"/onnxruntime_gpu-"$version"-cp312-*.whl | head -1)"
    [ -f "$wheel" ] || die "pip download gave no onnxruntime-gpu $version wheel for cp312"
    # A wheel is a zip of what `pip install --target` lays out; as one xz stream it is 20% smaller.
    local packed="${wheel%.whl}.tar.xz"
    if [ ! -f "$packed" ] || [ "$packed" -ot "$wheel" ]; then
        rm -rf "$tmp/site" && mkdir "$tmp/site"
        python3 -m zipfile -e "$wheel" "$tmp/site"
        tar -C "$tmp/site" -cf - . | xz -T0 -6 > "$packed.partial"
        mv "$packed.partial" "$packed"
    fi
    split -b "${part_mib}M" -d -a 2 "$packed" "$KIT/ort.part-"

    {
        echo "ort $(basename "$packed") $(sha256sum < "$packed" | cut -d' ' -f1)"
        echo "app app.tar.xz $(sha256sum < "$KIT/app.tar.xz" | cut -d' ' -f1)"
        for part in "$KIT"/ort.part-*; do echo "part $(basename "$part")"; done
    } > "$KIT/MANIFEST"

    # The plan: every part but the last alone; the last with the app and the manifest, and the run.
    local parts=("$KIT"/ort.part-*) n i
    n=${#parts[@]}
    echo "staged in $KIT:"; ls -l "$KIT" | tail -n +2
    echo
    echo "On the GPU machine: $n device calls back to back (a machine idle 30 s is given back and"
    echo "forgets the pieces already sent). Each carries:"
    for ((i = 0; i < n - 1; i++)); do
        echo "  call $((i + 1)): carry [\".gpukit/$(basename "${parts[$i]}")\"]  command: ls -l .gpukit"
    done
    echo "  call $n: carry [\".gpukit/$(basename "${parts[$((n - 1))]}")\", \".gpukit/app.tar.xz\", \".gpukit/MANIFEST\"]"
    echo "          command: bash benches/gpu_kit.sh session   (or run / checks)"
}

unpack() {
    [ -f "$KIT/MANIFEST" ] || die "$KIT/MANIFEST missing: carry the pieces that 'benches/gpu_kit.sh stage' wrote"
    local missing=() packed sum
    while read -r kind name rest; do
        case "$kind" in
            part|app) [ -f "$KIT/$name" ] || missing+=("$name") ;;
        esac
    done < "$KIT/MANIFEST"
    [ ${#missing[@]} -eq 0 ] || die "pieces missing on this machine: ${missing[*]} (was it given back between calls? carry them again)"
    read -r _ packed sum < <(grep '^ort ' "$KIT/MANIFEST")
    mkdir -p "$WORK"
    if [ ! -d "$WORK/site/onnxruntime" ]; then
        [ "$(cat "$KIT"/ort.part-* | sha256sum | cut -d' ' -f1)" = "$sum" ] || die "$packed: sha256 differs from MANIFEST (a piece is stale)"
        rm -rf "$WORK/site.partial" && mkdir -p "$WORK/site.partial"
        cat "$KIT"/ort.part-* | xz -dc | tar -C "$WORK/site.partial" -xf -
        rm -rf "$WORK/site" && mv "$WORK/site.partial" "$WORK/site"
    fi
    if [ ! -x "$WORK/app/bin/sapiens-stream" ]; then
        read -r _ _ sum < <(grep '^app ' "$KIT/MANIFEST")
        [ "$(sha256sum < "$KIT/app.tar.xz" | cut -d' ' -f1)" = "$sum" ] || die "app.tar.xz: sha256 differs from MANIFEST"
        tar -C "$WORK" -xJf "$KIT/app.tar.xz"
    fi
    echo "unpacked in $WORK: $(ls "$WORK/site/onnxruntime/capi" | grep -c '\.so') ONNX Runtime libraries, the app, $(ls "$WORK/app/lib" | wc -l) bundled libraries"
}

run_kit() {
    unpack
    # Under the device tool's $OUT the results come back even when the call is cut off.
    local default="$ROOT/bench-results/gpu-e2e-$(date -u +%Y%m%dT%H%M%SZ)"
    [ -n "${OUT:-}" ] && default="$OUT/gpu-e2e"
    local results="${GPUKIT_RESULTS:-$default}" rc=0
    # onnxruntime-gpu shadows the machine's CPU onnxruntime for torch_reference.py's ort-cuda mode.
    PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 python3 "$ROOT/benches/gpu_e2e.py" \
        --bin "$WORK/app/bin/sapiens-stream" --ort-lib "$WORK/site/onnxruntime/capi" \
        --ld-path "$WORK/app/lib" --work-dir "$WORK/work" --results "$results" "$@" || rc=$?
    return $rc
}

# The CUDA 13 / cuDNN folders pip put beside torch, for the loader.
nvidia_lib_path() {
    python3 -c 'import glob, os, sys
dirs = []
for entry in sys.path:
    dirs += glob.glob(os.path.join(entry, "nvidia", "*", "lib"))
print(":".join(sorted(set(dirs))))'
}

checks() {
    unpack
    local results="${GPUKIT_RESULTS:-${OUT:+$OUT/gpu-checks}}"
    results="${results:-$ROOT/bench-results/gpu-checks-$(date -u +%Y%m%dT%H%M%SZ)}"
    mkdir -p "$results"
    python3 "$ROOT/engines/generate_models.py" --out "$ROOT/engines/models" --arch tiny --tasks pose17,seg,depth,normal
    local env_vars=(SAPIENS_REPO_ROOT="$ROOT" ORT_DYLIB_PATH="$WORK/site/onnxruntime/capi/libonnxruntime.so.$(sed -n 's/^onnxruntime==//p' "$ROOT/scripts/requirements.txt")"
                    LD_LIBRARY_PATH="$(nvidia_lib_path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" SAPIENS_PYTHON=python3)
    local rc=0
    # The YUV test compares with OpenCV, which this machine's Python may lack; it needs no GPU.
    env "${env_vars[@]}" "$WORK/app/bin/gpu-test" --nocapture --test-threads 1 --skip yuv_conversion_equals_opencv \
        2>&1 | tee "$results/gpu-tests.txt" || rc=$?
    env "${env_vars[@]}" "$WORK/app/bin/gpu-bench" --bench --warm-up-time 1 --measurement-time 3 \
        2>&1 | tee "$results/gpu-bench.txt" || rc=$?
    return $rc
}

streams_kit() {
    unpack
    local results="${GPUKIT_RESULTS:-${OUT:+$OUT/gpu-streams}}"
    results="${results:-$ROOT/bench-results/gpu-streams-$(date -u +%Y%m%dT%H%M%SZ)}"
    mkdir -p "$results"
    local frames="${STREAMS_FRAMES:-200}" arch="${STREAMS_ARCH:-0.3b}" version
    version="$(sed -n 's/^onnxruntime==//p' "$ROOT/scripts/requirements.txt")"
    local model="$ROOT/engines/models/sapiens_${arch}_pose308_fp16_mha.onnx"
    [ -f "$model" ] || python3 "$ROOT/engines/generate_models.py" --out "$ROOT/engines/models" \
        --arch "$arch" --tasks pose308 --fp16 --fused-attention > "$results/generate.log" 2>&1
    [ -f "$model" ] || die "generate_models.py made no $model (see $results/generate.log)"
    PYTHONPATH="$ROOT/benches" python3 -c 'import sys; from pathlib import Path; from gpu_e2e import make_frames
make_frames(Path(sys.argv[1]), int(sys.argv[2]), 1920, 1080)' "$WORK/streams-frames" "$frames"
    LD_LIBRARY_PATH="$WORK/app/lib:$WORK/site/onnxruntime/capi:$(nvidia_lib_path)" PYTHONUNBUFFERED=1 \
        python3 "$ROOT/benches/streams.py" --binary "$WORK/app/bin/sapiens-stream" --model "$model" \
        --input "$WORK/streams-frames" --frames "$frames" --counts "${STREAMS_COUNTS:-1,2,4,8}" \
        --repeats "${STREAMS_REPEATS:-1}" --live-seconds 0 --gpu-memory --logs "$results/logs" \
        --extra "--engine cuda --device cuda:0 --ort-lib $WORK/site/onnxruntime/capi/libonnxruntime.so.$version" \
        2>&1 | tee "$results/streams.txt"
    return "${PIPESTATUS[0]}"
}

# One step of the session: at most CAP seconds and never past the deadline; its results in
# $WORK/session/NAME, and everything so far packed for the device tool after it.
session_step() {
    local name="$1" cap="$2"; shift 2
    local left=$((SESSION_DEADLINE - SECONDS - 10))
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -lt 30 ]; then
        echo "== $name: skipped, $((SESSION_DEADLINE - SECONDS)) s left" | tee -a "$WORK/session/steps.txt"
        return 0
    fi
    echo "== $name (at most $cap s): $*" | tee -a "$WORK/session/steps.txt"
    local begin=$SECONDS rc=0
    GPUKIT_RESULTS="$WORK/session/$name" timeout -k 5 "$cap" bash "$ROOT/benches/gpu_kit.sh" "$@" \
        > "$WORK/session/$name.log" 2>&1 || rc=$?
    echo "== $name: rc $rc after $((SECONDS - begin)) s" | tee -a "$WORK/session/steps.txt"
    tail -n 12 "$WORK/session/$name.log"
    [ -n "${OUT:-}" ] && tar -C "$WORK" -czf "$OUT/gpu-session.tar.gz" session
    return 0
}

# The session's steps, most wanted first: NAME, at most how many seconds, the kit's verb and options.
SESSION_STEPS=(
    "e2e-fp32 170 run --skip-torch"
    "checks 120 checks"
    "streams 300 streams"
    "torch 240 run --skip-e2e --compile-timeout 150"
    "e2e-fp16 130 run --fp16 --skip-torch"
    "e2e-fp16-mha 130 run --fp16 --fused-attention --torch-modes ort-cuda"
    "sapiens2 150 run --family sapiens2 --arch 0.4b --task pose308 --torch-modes eager-bf16"
    "sapiens2-fp16-mha 150 run --family sapiens2 --arch 0.4b --task pose308 --fp16 --fused-attention --skip-torch"
)

session() {
    local budget="${1:-540}"
    shift $(($# > 0 ? 1 : 0))
    local wanted=("$@")
    SESSION_DEADLINE=$((SECONDS + budget))
    # GPUKIT_SESSION_EXTRA goes after each run's own options (the last one wins): a dry run
    # here takes "--engine cpu --torch-device cpu --arch tiny --task pose17 --frames 40".
    local extra step name cap verb options ran=() steps=()
    read -r -a extra <<< "${GPUKIT_SESSION_EXTRA:-}"
    if [ ${#wanted[@]} -eq 0 ]; then
        steps=("${SESSION_STEPS[@]}")
    else
        # The named steps, in the order named.
        local found
        for name in "${wanted[@]}"; do
            found=${#steps[@]}
            for step in "${SESSION_STEPS[@]}"; do [ "${step%% *}" = "$name" ] && steps+=("$step"); done
            [ ${#steps[@]} -gt "$found" ] || die "session: no step $name (steps: ${SESSION_STEPS[*]%% *})"
        done
    fi
    unpack
    rm -rf "$WORK/session" && mkdir -p "$WORK/session"
    for step in "${steps[@]}"; do
        read -r name cap verb options <<< "$step"
        ran+=("$name")
        # shellcheck disable=SC2086
        if [ "$verb" = run ]; then
            session_step "$name" "$cap" run $options "${extra[@]}"
        else
            session_step "$name" "$cap" "$verb"
        fi
    done
    echo "== digest"
    for name in "${ran[@]}"; do
        [ "$name" = checks ] && continue
        if [ "$name" = streams ]; then
            echo "-- streams"; grep -h -E "^\||^\{" "$WORK/session/streams.log" || true
            continue
        fi
        [ -f "$WORK/session/$name.log" ] || continue
        echo "-- $name"; grep -h -E "^GPU:|^  (eager|compile|ort-cuda|program|ratio|detector)" "$WORK/session/$name.log" || true
    done
    grep -h -E "^test result:|FAILED|panicked|^test .* \.\.\. (FAILED|ok|ignored)" "$WORK/session/checks.log" 2>/dev/null | head -40 || true
    grep -h -E "time:" -B1 "$WORK/session/checks.log" 2>/dev/null | grep -v "^--" | head -60 || true
}

case "${1:-}" in
    stage) shift; stage "$@" ;;
    run) shift; run_kit "$@" ;;
    checks) checks ;;
    streams) streams_kit ;;
    unpack) unpack ;;
    session) shift; session "$@" ;;
    *) echo "usage: benches/gpu_kit.sh stage [--part-mib N] | run [gpu_e2e.py options] | checks | streams | unpack | session [SECONDS [STEP...]]" >&2; exit 2 ;;
esac
