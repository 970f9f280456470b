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

# A part that is one check with no tally of its own (the type check, the format check, the lint): it counts as one test,
# passed when the command exits 0.
run_check() {
  local name=$1
  shift
  run_part "$name" one_check "$@"
}
one_check() {
  local status=0
  "$@" || status=$?
  if [ "$status" = 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
  return "$status"
}
