#!/usr/bin/env bash
# Builds the router's native data plane (router/native, Rust) into .venv as the
# extension module slipway_dataplane, once per content digest of its sources:
# a fresh clone on a host that built the same sources before only copies a file.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${SLIPWAY_NATIVE_CACHE:-/var/cache/slipway/native}"
crate=router/native
digest="$(cd "$crate" && find Cargo.toml Cargo.lock src fuzz/Cargo.toml fuzz/Cargo.lock fuzz/fuzz_targets -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
built="$cache/$digest/slipway_dataplane.abi3.so"
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"

# The request, response and body parsers under libFuzzer (cargo fuzz, nightly
# Rust) for a bounded time each, before a new digest is cached; the corpus grows
# in the cache across builds. A crash fails the build and names its input.
FUZZ_SECONDS="${SLIPWAY_FUZZ_SECONDS:-20}"
fuzz() {
    if ! cargo +nightly --version >/dev/null 2>&1; then
        echo "       fuzzing skipped: no nightly Rust toolchain (rustup toolchain install nightly)"
        return 0
    fi
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked --quiet cargo-fuzz
    local target
    for target in request_head response_head body_relay; do
        mkdir -p "$cache/fuzz/corpus/$target" "$cache/fuzz/artifacts/$target"
        if ! cargo +nightly fuzz run --release --target-dir "$cache/fuzz/target" --fuzz-dir "$crate/fuzz" \
            "$target" "$cache/fuzz/corpus/$target" -- -max_total_time="$FUZZ_SECONDS" \
            -artifact_prefix="$cache/fuzz/artifacts/$target/" > "$cache/fuzz/$target.log" 2>&1; then
            tail -n 30 "$cache/fuzz/$target.log" >&2
            echo "slipway setup: the $target fuzzer found an input that breaks the data plane (in $cache/fuzz/artifacts/$target/)" >&2
            exit 1
        fi
        echo "       fuzzed $target for ${FUZZ_SECONDS} s: $(grep -o 'Done [0-9]* runs' "$cache/fuzz/$target.log" | tail -n1 | cut -d' ' -f2) inputs"
    done
}

if [ ! -f "$built" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null 2>&1 || {
        echo "slipway setup: the router's data plane needs Rust's cargo (https://rustup.rs), which is not installed" >&2
        exit 1
    }
    echo "-----> Building the router data plane ($crate, digest $digest)"
    started=$SECONDS
    # Its own unit tests first (parsing and framing rules): a digest is cached only once they pass.
    CARGO_TARGET_DIR="$cache/target" cargo test --release --locked --quiet --manifest-path "$crate/Cargo.toml" 2>&1 |
        grep -v '^$' | sed 's/^/       /'
    fuzz
    CARGO_TARGET_DIR="$cache/target" cargo build --release --locked --quiet --manifest-path "$crate/Cargo.toml"
    mkdir -p "$cache/$digest"
    cp "$cache/target/release/libslipway_dataplane.so" "$built.part"
    mv "$built.part" "$built"
    echo "       built in $((SECONDS - started)) s"
fi
if ! cmp -s "$built" "$site/slipway_dataplane.abi3.so"; then
    cp "$built" "$site/slipway_dataplane.abi3.so.part"
    mv "$site/slipway_dataplane.abi3.so.part" "$site/slipway_dataplane.abi3.so"
fi
