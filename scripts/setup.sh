#!/usr/bin/env bash
# Installs what Slipway needs on a Debian host: the real engines (etcd, nats-server,
# runc, CNI plugins, nftables) from Debian packages when missing, the Python environment in .venv,
# and the stack images builds and dynos run on (once per host and recipe: a few minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_pkgs+=(nats-server)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need_pkgs+=(runc)
command -v git >/dev/null 2>&1 || need_pkgs+=(git)
# The multi-host tests build network namespaces and veth pairs with iproute2.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_pkgs+=(iproute2)
# The log drain tests send to a real rsyslog, over plain TCP and TLS (gnutls).
[ -x /usr/sbin/rsyslogd ] || need_pkgs+=(rsyslog)
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || need_pkgs+=(rsyslog-gnutls)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# Every dyno and build sandbox gets its own network namespace: the standard CNI plugins wire
# it (bridge, host-local, portmap, loopback) and the agent's nftables table seals it off.
[ -x /usr/lib/cni/bridge ] || need_pkgs+=(containernetworking-plugins)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need_pkgs+=(nftables)
# Builds and dynos run on the stack images, made from Debian's packages by debootstrap.
[ -x /usr/sbin/debootstrap ] || need_pkgs+=(debootstrap)
# The built-in postgresql add-on's engine (Slipway starts its own cluster).
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
# The built-in redis add-on's engine: one redis-server per add-on, started by slipway-addons.
[ -x /usr/bin/redis-server ] || need_pkgs+=(redis-server)
for extra in "$@"; do
    case "$extra" in
        --bench) for p in wrk nginx haproxy; do
                     command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] || need_pkgs+=("$p")
                 done
                 # h2load: HTTP/2 against HTTP/1.1 over TLS.
                 command -v h2load >/dev/null 2>&1 || need_pkgs+=(nghttp2-client) ;;
    esac
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "slipway setup: need root to install: ${need_pkgs[*]}" >&2
        exit 1
    fi
    echo "-----> Installing system packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
    # Debian starts the packaged daemons; Slipway runs its own copies on its own ports.
    for svc in etcd nats-server nginx haproxy rsyslog postgresql redis-server; do
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "-----> Preparing Python environment in .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi

# The router's compiled data plane, cached by source digest.
bash scripts/build_native.sh

# The stack images (slipway/stackimage.py), cached by recipe digest in SLIPWAY_STACKS_DIR.
.venv/bin/slipway-stack build --quiet
