#!/bin/sh
# Installs the Debian packages listed in scripts/deps.txt that are missing,
# plus Node.js/npm (used only by the end-to-end tests) when absent.
# Used by `make deps`, `make run`, `make test` and .ci/run.
set -e
here=$(dirname "$0")
pkgs=$(grep -v '^#' "$here/deps.txt" | grep -v '^$')
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
echo "install-deps: installing:$missing"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
