#!/usr/bin/env bash
# The VM tier: installs its tools, builds or reuses the guest image, then runs the QEMU tests
# (vm-tests/*.test.ts). Ends, like the namespace suite, with a "N passed, N failed" line; a
# failure before the tests (tools, image) counts as one failed test.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
if ! vm-tests/setup.sh || ! vm-tests/image.sh >/dev/null; then
  echo "[vm-tests] could not prepare the VM tier (see above)"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "[vm-tests] guest image ready after $((SECONDS - start)) s"
# On the pinned Node, as the namespace suite (scripts/test.sh).
.runtime/node/bin/node node_modules/vitest/vitest.mjs run --config vm-tests/vitest.config.ts "$@"
rc=$?
echo "[vm-tests] VM tier took $((SECONDS - start)) s"
exit $rc
