#!/usr/bin/env bash
# Prepares, on this machine, what the GPU check needs on a device machine that has no network:
# the ONNX Runtime GPU libraries (from the onnxruntime-gpu wheel on PyPI), cuRAND and our
# release binary, checksummed, compressed and split into pieces that each fit the 64 MiB one device
# call carries. Everything lands in .gpu-runtime/ (ignored by git: the libraries are never
# committed). benches/gpu/device.sh reassembles and runs them there.
#
#     cargo build --release && benches/gpu/pack.sh
#
# Then, on the device, one call per piece and a last one that runs the check (the order and
# the exact commands are written to .gpu-runtime/CALLS).
set -euo pipefail

ORT_VERSION="${ORT_VERSION:-1.31.1}"
# The CUDA provider links cuRAND, which torch's CUDA 13 wheels no longer ship (a dry run here
# found it missing beside torch 2.15's nvidia/ folder): its CUDA 13 wheel goes along.
CURAND_VERSION="${CURAND_VERSION:-10.4.5.25}"
PIECE_MIB="${PIECE_MIB:-56}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$ROOT/.gpu-runtime"
VALIDATOR="$ROOT/target/release/validator"
PIP="${PIP:-pip3}"

[ -x "$VALIDATOR" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v zstd >/dev/null || { echo "zstd is needed (apt-get install zstd)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rm -rf "$OUT"
mkdir -p "$OUT" "$work/wheel" "$work/bundle/lib" "$work/bundle/bin"

# The wheel's Python tag does not matter: only its shared libraries are used.
"$PIP" download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --dest "$work/wheel" "onnxruntime-gpu==$ORT_VERSION"
wheel="$(ls "$work"/wheel/onnxruntime_gpu-*.whl)"
for library in "libonnxruntime.so.$ORT_VERSION" libonnxruntime_providers_shared.so \
    libonnxruntime_providers_cuda.so; do
    unzip -q -j "$wheel" "onnxruntime/capi/$library" -d "$work/bundle/lib"
done
"$PIP" download --quiet --no-deps --only-binary=:all: --dest "$work/wheel" \
    "nvidia-curand==$CURAND_VERSION"
unzip -q -j "$(ls "$work"/wheel/nvidia_curand-*.whl)" "nvidia/cu13/lib/libcurand.so.10" -d "$work/bundle/lib"
cp "$VALIDATOR" "$work/bundle/bin/validator"
strip "$work/bundle/bin/validator" 2>/dev/null || true
(cd "$work/bundle" && sha256sum lib/* bin/* > SHA256SUMS)

# The device machine may lack the zstd tool: this one goes along, with the libraries it links
# (uncompressed, a few MiB), used there only when it has none of its own.
mkdir -p "$OUT/tools"
cp "$(command -v zstd)" "$OUT/tools/zstd"
{ ldd "$(command -v zstd)" || true; } | awk '/=> \// {print $3}' | { grep -v -E '/libc\.so' || true; } \
    | xargs -r -I{} cp -L {} "$OUT/tools/"

# --long widens the match window to 2 GiB, which finds the repeats across CUDA fat binaries.
tar -C "$work/bundle" -cf - . | zstd -q -T0 "-${ZSTD_LEVEL:-19}" --long=31 -o "$work/bundle.tar.zst"
split -b "${PIECE_MIB}M" -d -a 2 "$work/bundle.tar.zst" "$OUT/piece-"
(cd "$OUT" && sha256sum piece-* > PIECES.sha256)
sha256sum "$work/bundle.tar.zst" | cut -d' ' -f1 > "$OUT/BUNDLE.sha256"

{
    echo "# device calls, back to back within the warm window, each carrying one piece; the"
    echo "# last one also runs the check (timeout_s 560; the results come back under \$OUT):"
    pieces=("$OUT"/piece-*)
    last="$(basename "${pieces[-1]}")"
    for piece in "${pieces[@]}"; do
        name="$(basename "$piece")"
        command="benches/gpu/device.sh stash $name"
        [ "$name" = "$last" ] && command="$command && benches/gpu/device.sh check"
        echo "run carry=[\".gpu-runtime/$name\",\".gpu-runtime/PIECES.sha256\",\".gpu-runtime/BUNDLE.sha256\",\".gpu-runtime/tools\"] command: $command"
    done
} > "$OUT/CALLS"
du -b "$work/bundle"/lib/* "$work/bundle/bin/validator" "$work/bundle.tar.zst" "$OUT"/piece-*
cat "$OUT/CALLS"
