#!/usr/bin/env bash
# Builds Pebble (Let's Encrypt's ACME test server) and its DNS stand-in,
# pebble-challtestsrv, from the Go module proxy, once per version: the ACME
# tests issue certificates from it, never from a public CA.
set -euo pipefail

version="${SLIPWAY_PEBBLE_VERSION:-v2.10.3}"
cache="${SLIPWAY_PEBBLE_CACHE:-/var/cache/slipway/pebble}/$version"
if [ -x "$cache/pebble" ] && [ -x "$cache/pebble-challtestsrv" ]; then
    exit 0
fi
export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null 2>&1 || { echo "slipway setup: the ACME tests need Go to build Pebble" >&2; exit 1; }
echo "-----> Building Pebble $version (the ACME test server) into $cache"
mkdir -p "$cache"
GOBIN="$cache" GOFLAGS=-mod=mod go install \
    "github.com/letsencrypt/pebble/v2/cmd/pebble@$version" \
    "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$version"
