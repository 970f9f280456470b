# Sourced by scripts/test.sh: runs one part of the test command and says how it ended, for
# scripts/ci-tally.mjs. The part's own output is passed through; `rc` keeps the first failure.
rc=${rc:-0}
run_part() {
  local name=$1
  shift
  local status=0
  "$@" || status=$?
  echo "[twill-test] part $name exit $status"
  if [ "$status" != 0 ] && [ "$rc" = 0 ]; then rc=$status; fi
}
