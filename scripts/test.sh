#!/usr/bin/env bash
# The test command: installs and builds what it needs, then runs every vitest suite
# (unit tests, and integration tests on the real kernel, real etcd and real CNI plugins).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec npx vitest run "$@"
