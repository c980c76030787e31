#!/bin/sh
# tests/tools/deps.sh — installs the Debian packages kvchat needs, only those missing (apt-get as root or sudo).
pkgs="build-essential pkg-config libsentencepiece-dev libncurses-dev tmux python3 python3-pip"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
  echo "deps: need root or sudo to install:$missing" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq $missing >/dev/null || {
  echo "deps: apt-get install failed for:$missing" >&2; exit 1; }
