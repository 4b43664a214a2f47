#!/usr/bin/env bash
# Makes this machine ready for `make run` / `make test`: a virtualenv with the pinned
# packages, and (for tests) the real services the suite starts: Docker Engine, sshd,
# iproute2 for network namespaces, busybox for a container image, PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-run}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap: need root (or sudo) to install: $*" >&2; exit 1; fi
}

apt_missing=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || apt_missing+=("$2"); }

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "bootstrap: clusterwatch needs Python 3.11 or newer ($PY is $("$PY" -V 2>&1))" >&2; exit 1
fi
"$PY" -c 'import venv, ensurepip' 2>/dev/null || apt_missing+=(python3-venv)

if [ "$what" = bench ]; then
  need monit monit
  need prometheus-node-exporter prometheus-node-exporter
  need prometheus prometheus
  need prometheus-blackbox-exporter prometheus-blackbox-exporter
  what=test
fi
if [ "$what" = test ]; then
  need dockerd docker.io
  need /bin/busybox busybox-static
  need /usr/sbin/sshd openssh-server
  need ip iproute2
  need ssh-keygen openssh-client
  need /usr/bin/chromium chromium
  # PostgreSQL's binaries live under a versioned directory (Debian 12: 15), not on PATH.
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || apt_missing+=(postgresql)
fi

if [ "${#apt_missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing system packages: ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

stamp=".venv/.installed"
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: preparing .venv"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
