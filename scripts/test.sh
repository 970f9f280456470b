#!/usr/bin/env bash
# The test command: installs and builds what it needs, type-checks the code with the tests
# (tsconfig.test.json), then runs every vitest suite (unit tests, and integration tests on the
# real kernel, real etcd and real CNI plugins), then the VM tier (vm-tests/run.sh: three QEMU
# guests with their own kernels) and the Vagrant lab's smoke run (vm-tests/vagrant-smoke.sh); TWILL_VM_TESTS=0 skips both, and says so. Each part ends
# with its own "N passed, N failed" line and a "[twill-test] part NAME exit STATUS" line, which
# scripts/ci-tally.mjs turns into the CI's verdict. Arguments select vitest files (the namespace
# suites only).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ $# -gt 0 ] && exec npx vitest run "$@"
rc=0
. scripts/test-parts.sh
run_check typecheck npx tsc -p tsconfig.test.json
run_part namespace npx vitest run
if [ "${TWILL_VM_TESTS:-1}" != 0 ]; then
  run_part vm vm-tests/run.sh
  run_part vagrant vm-tests/vagrant-smoke.sh
else
  echo "[twill-test] VM tiers skipped (TWILL_VM_TESTS=0)"
fi
exit "$rc"
