#!/usr/bin/env bash
# The main job: a lab of N nodes (network namespaces) with pods created by the real CNI
# plugins, twill's BPF datapath on every node, and a demo of pods talking across nodes.
# Usage: scripts/lab.sh [--nodes N] [--pods-per-node K]; `bin/twill lab down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bin/twill lab up --nodes 3 --pods-per-node 2 "$@"
bin/twill lab demo
