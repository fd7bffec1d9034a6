#!/usr/bin/env bash
# Builds the router's native data plane (router/native, Rust) into .venv as the
# extension module slipway_dataplane, once per content digest of its sources:
# a fresh clone on a host that built the same sources before only copies a file.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${SLIPWAY_NATIVE_CACHE:-/var/cache/slipway/native}"
crate=router/native
digest="$(cd "$crate" && find Cargo.toml Cargo.lock src -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
built="$cache/$digest/slipway_dataplane.abi3.so"
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"

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
