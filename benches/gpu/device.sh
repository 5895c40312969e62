#!/usr/bin/env bash
# The GPU check, on a device machine with no network (see benches/gpu/pack.sh for the pieces).
#
#     benches/gpu/device.sh stash piece-NN     # once per piece, each call carrying that piece
#     benches/gpu/device.sh check              # reassemble, verify, smoke test, benchmark
#     benches/gpu/device.sh check --cpu-dry-run   # the same path on CPU, with small models
#
# Pieces are kept in $GPU_STASH (default /tmp/gpu-stash) between calls, so the calls must
# follow each other while the machine is warm. Results go to $OUT (the device tool's folder
# that comes back), or to ./gpu-results when it is unset.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUNTIME="$ROOT/.gpu-runtime"
STASH="${GPU_STASH:-/tmp/gpu-stash}"
RESULTS="${OUT:-$ROOT/gpu-results}"
ORT_VERSION="${ORT_VERSION:-1.31.1}"
mkdir -p "$STASH" "$RESULTS"

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RESULTS/device.log"; }

unzstd_stream() {
    if command -v zstd >/dev/null; then
        zstd -q -d --long=31 -c "$1"
    else
        LD_LIBRARY_PATH="$STASH/tools${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
            "$STASH/tools/zstd" -q -d --long=31 -c "$1"
    fi
}

stash() {
    local name="$1"
    cp "$RUNTIME/$name" "$RUNTIME/PIECES.sha256" "$RUNTIME/BUNDLE.sha256" "$STASH/"
    if [ -d "$RUNTIME/tools" ]; then
        mkdir -p "$STASH/tools" && cp "$RUNTIME"/tools/* "$STASH/tools/"
        chmod +x "$STASH/tools/zstd"
    fi
    (cd "$STASH" && grep " $name\$" PIECES.sha256 | sha256sum -c --quiet -)
    local have total
    have=0
    for piece in $(awk '{print $2}' "$STASH/PIECES.sha256"); do
        if [ -f "$STASH/$piece" ]; then have=$((have + 1)); fi
    done
    total="$(wc -l < "$STASH/PIECES.sha256")"
    log "stashed $name ($have of $total pieces)"
}

check() {
    local dry_run=""
    [ "${1:-}" = "--cpu-dry-run" ] && dry_run=1
    log "reassembling $(wc -l < "$STASH/PIECES.sha256") pieces"
    (cd "$STASH" && sha256sum -c --quiet PIECES.sha256)
    # In the order the pack listed them: a stale piece of an earlier pack is never taken.
    (cd "$STASH" && awk '{print $2}' PIECES.sha256 | xargs cat) > "$STASH/bundle.tar.zst"
    [ "$(sha256sum "$STASH/bundle.tar.zst" | cut -d' ' -f1)" = "$(cat "$STASH/BUNDLE.sha256")" ] \
        || { log "the reassembled bundle does not match its checksum"; exit 1; }
    rm -rf "$STASH/bundle" && mkdir -p "$STASH/bundle"
    unzstd_stream "$STASH/bundle.tar.zst" | tar -C "$STASH/bundle" -xf -
    (cd "$STASH/bundle" && sha256sum -c --quiet SHA256SUMS)
    log "bundle verified: $(cd "$STASH/bundle" && wc -l < SHA256SUMS) files"

    local validator="$STASH/bundle/bin/validator"
    export ORT_DYLIB_PATH="$STASH/bundle/lib/libonnxruntime.so.$ORT_VERSION"
    # CUDA 13 and cuDNN come from torch's nvidia wheels; ONNX Runtime finds its providers beside
    # itself.
    local nvidia cuda_dirs=""
    nvidia="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia"))' || true)"
    if [ -n "$nvidia" ] && [ -d "$nvidia" ]; then
        cuda_dirs="$(find "$nvidia" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd: - || true)"
    fi
    log "CUDA libraries from: ${cuda_dirs:-nowhere (no torch nvidia/ folder)}"
    export LD_LIBRARY_PATH="$STASH/bundle/lib${cuda_dirs:+:$cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # A CUDA or cuDNN version the provider was not built for shows here, named, before any
    # session fails with a less readable message.
    local missing
    missing="$(ldd "$STASH/bundle/lib/libonnxruntime_providers_cuda.so" | grep 'not found' || true)"
    [ -z "$missing" ] || log "the CUDA provider lacks: $(echo "$missing" | awk '{print $1}' | paste -sd' ' -)"

    local device=cuda bench_flags=()
    if [ -n "$dry_run" ]; then
        device=cpu
        bench_flags=(--device cpu --profile tiny --samples 24)
        log "dry run on CPU: the CUDA provider is not used"
    else
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RESULTS/card.csv"
    fi

    # The smoke test in each precision the device runs, against transformers' f32 reference
    # losses: f32 within the held-out bound (1e-3); the 16-bit graphs within what their
    # mantissas allow these tiny models (transformers' own bf16 losses on this fixture are up
    # to 4.4e-2 from its f32 ones, its f16 losses 3.5e-3).
    # A failed smoke is reported and the benchmark still runs (the device's minutes are few);
    # the script's status says it failed.
    local smokes=("f32:1e-3" "bf16:1e-1")
    [ -z "$dry_run" ] || smokes=("f32:1e-3" "f16:2e-2")
    local smoke precision bound failed=()
    for smoke in "${smokes[@]}"; do
        precision="${smoke%%:*}" bound="${smoke##*:}"
        log "smoke test: validator eval --device $device --precision $precision on the llama-bf16 fixture"
        "$validator" eval --json --device "$device" --precision "$precision" \
            --model "$ROOT/fixtures/models/llama-bf16" \
            --data "$ROOT/fixtures/models/samples.jsonl" > "$RESULTS/smoke-$precision.json" \
            || { failed+=("$precision (validator eval failed)"); continue; }
        python3 - "$RESULTS/smoke-$precision.json" "$ROOT/fixtures/models/reference.json" "$precision" "$bound" <<'EOF' | tee -a "$RESULTS/device.log" || failed+=("$precision")
import json, sys
ours = json.load(open(sys.argv[1]))
reference = json.load(open(sys.argv[2]))
precision, bound = sys.argv[3], float(sys.argv[4])
expected = reference["models"]["llama-bf16"]["losses"]
pairs = [(a, b) for a, b in zip(ours["losses"], expected) if a is not None and b is not None]
diff = max(abs(a - b) for a, b in pairs)
print(f"smoke {precision}: {len(ours['losses'])} losses, max |difference| from transformers f32 "
      f"{diff:.2e} (bound {bound:.0e}), {ours['tokens_per_second']:.0f} tokens/s, phases {ours['seconds']}")
sys.exit(0 if diff <= bound and len(pairs) == sum(b is not None for b in expected) else 1)
EOF
    done
    log "benchmark: benches/eval_gpu.py ${bench_flags[*]}"
    python3 "$ROOT/benches/eval_gpu.py" --validator "$validator" --json "$RESULTS/eval_gpu.json" \
        "${bench_flags[@]}" 2>&1 | tee -a "$RESULTS/device.log"
    if [ "${#failed[@]}" -gt 0 ]; then
        log "smoke tests failed: ${failed[*]}"
        return 1
    fi
    log "done"
}

case "${1:-}" in
    stash) stash "$2" ;;
    check) shift; check "$@" ;;
    *) echo "usage: $0 stash piece-NN | check [--cpu-dry-run]" >&2; exit 2 ;;
esac
