#!/usr/bin/env bash
# Sets up the peers of bench/run_peer_bench.sh (benchmark-only; nothing in Edifice's product or
# tests depends on Python): Debian's PyTorch for /usr/bin/python3 (apt) and JAX on CPU (pip) in
# a venv at build/peer-venv that also sees the system packages. Idempotent: re-running only
# installs what is missing. A failed JAX install is not fatal (the benchmark then skips JAX).
#
#   bash bench/setup_peers.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PEER_VENV:-$root/build/peer-venv}"
py=/usr/bin/python3

sudo_cmd=()
if [[ "$(id -u)" != 0 ]]; then sudo_cmd=(sudo); fi

missing=()
dpkg -s python3-torch >/dev/null 2>&1 || missing+=(python3-torch)
dpkg -s python3-numpy >/dev/null 2>&1 || missing+=(python3-numpy)
dpkg -s python3-venv >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "setup_peers: apt-get install ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y "${missing[@]}"
fi
"$py" -c 'import torch, numpy' || { echo "setup_peers: $py cannot import torch" >&2; exit 1; }

if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup_peers: creating $venv"
  "$py" -m venv --system-site-packages "$venv"
fi
if "$venv/bin/python" -c 'import jax' >/dev/null 2>&1; then
  echo "setup_peers: jax $("$venv/bin/python" -c 'import jax; print(jax.__version__)') already installed"
elif "$venv/bin/pip" install --quiet jax; then
  echo "setup_peers: installed jax $("$venv/bin/python" -c 'import jax; print(jax.__version__)')"
else
  echo "setup_peers: WARNING: pip install jax failed; the benchmark will skip JAX" >&2
fi
