#!/usr/bin/env bash
# Sets up the peers of bench/run_peer_bench.sh (benchmark-only; nothing in Edifice's product or
# tests depends on Python): Debian's PyTorch for /usr/bin/python3 (apt), and JAX on CPU, ONNX
# Runtime and OpenVINO (pip, the pinned versions below) in a venv at build/peer-venv that also
# sees the system packages. Idempotent: re-running only installs what is missing or at another
# version. A failed pip install is not fatal (the benchmark then skips that peer).
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
# The versions the page's figures were measured with (docs/performance.md lists them).
pins=(jax==0.10.2 onnxruntime==1.32.0 openvino==2026.4.1)
for pin in "${pins[@]}"; do
  name="${pin%%==*}"
  have="$("$venv/bin/pip" show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)"
  if [[ "$have" == "${pin#*==}" ]]; then
    echo "setup_peers: $name $have already installed"
  elif "$venv/bin/pip" install --quiet "$pin"; then
    echo "setup_peers: installed $pin"
  else
    echo "setup_peers: WARNING: pip install $pin failed; the benchmark will skip $name" >&2
  fi
done
