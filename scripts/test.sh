#!/usr/bin/env bash
# The test command: installs and builds what it needs, type-checks the code with the tests
# (tsconfig.test.json), checks the sources' formatting (Prettier, .prettierrc.json) and lints
# them (ESLint with typescript-eslint's type-aware rules, eslint.config.mjs), each a check of its
# own, then runs every vitest suite (unit tests, and integration tests on the
# real kernel, real etcd and real CNI plugins), then the VM tier (vm-tests/run.sh: three QEMU
# guests with their own kernels) and the Vagrant lab's smoke run (vm-tests/vagrant-smoke.sh); TWILL_VM_TESTS=0 skips both, and says so. Each part ends
# with its own "N passed, N failed" line and a "[twill-test] part NAME exit STATUS" line, which
# scripts/ci-tally.mjs turns into the CI's verdict. Arguments select vitest files (the namespace
# suites only).
#
# Everything runs on the pinned Node.js that scripts/setup.sh installs (.runtime/node, Node 24
# LTS), never on the machine's `node`: vitest and what the tests start (process.execPath, `node`
# on the PATH) run on it. The unit suite runs once more on the oldest Node that package.json's
# `engines` allows (.runtime/node-floor, 22.19.0), as its own part.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
runtime=$PWD/.runtime/node/bin/node
floor=$PWD/.runtime/node-floor/bin/node
export PATH="$PWD/.runtime/node/bin:$PATH"
[ $# -gt 0 ] && exec "$runtime" node_modules/vitest/vitest.mjs run "$@"
rc=0
. scripts/test-parts.sh
echo "[twill-test] Node $("$runtime" --version) (pinned runtime); engines floor $("$floor" --version)"
run_check typecheck "$runtime" node_modules/typescript/bin/tsc -p tsconfig.test.json
run_check format "$runtime" node_modules/prettier/bin/prettier.cjs --check .
run_check lint "$runtime" node_modules/eslint/bin/eslint.js --max-warnings 0 .
run_part unit-node-floor env PATH="$PWD/.runtime/node-floor/bin:$PATH" "$floor" node_modules/vitest/vitest.mjs run test/unit
run_part namespace "$runtime" node_modules/vitest/vitest.mjs run
if [ "${TWILL_VM_TESTS:-1}" != 0 ]; then
  run_part vm vm-tests/run.sh
  run_part vagrant vm-tests/vagrant-smoke.sh
else
  echo "[twill-test] VM tiers skipped (TWILL_VM_TESTS=0)"
fi
exit "$rc"
