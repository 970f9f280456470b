#!/usr/bin/env bash
# Builds the BPF objects of another commit into a directory of their own, for
# `twill bench --baseline-objects DIR` (a same-run comparison of a datapath change with the
# commit before it): the checkout and its build are not touched. Prints DIR, which also gets
# a file COMMIT naming what was built.
#   scripts/bpf-objects-at.sh REV [DIR]    (DIR: a new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/bpf-objects-at.sh REV [DIR]}
commit=$(git rev-parse --short "$rev^{commit}")
dir=${2:-$(mktemp -d "/tmp/twill-bpf-$commit.XXXXXX")}
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git archive "$commit" bpf | tar -x -C "$src"
make -s -C "$src/bpf" >&2
mkdir -p "$dir"
cp "$src"/bpf/build/*.bpf.o "$dir"/
echo "$commit" > "$dir/COMMIT"
echo "$dir"
