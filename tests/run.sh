#!/bin/bash
# Runs every test and ends with one line: "N passed, N failed".
#   - cmocka unit tests: $BUILD/tests/<module>/test_* (their own counts are summed)
#   - script tests: tests/<module>/test_*.sh and tests/e2e/test_*.sh (one count each)
#   - fuzz targets: $FUZZ_BUILD/fuzz_* run for a bounded time (one count each)
# Pass a substring as $1 to run only the tests whose path contains it.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
FUZZ_BUILD=${FUZZ_BUILD:-}
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
filter=${1:-}
passed=0
failed=0
failures=()
log_dir=$BUILD/test-logs
mkdir -p "$log_dir"

record() { # name status
	if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$1"); fi
}

for t in $(ls "$BUILD"/tests/*/test_* 2>/dev/null | grep -v '\.[od]$'); do
	[ -x "$t" ] || continue
	case "$t" in *"$filter"*) ;; *) continue ;; esac
	name=${t#"$BUILD"/tests/}
	log="$log_dir/${name//\//_}.log"
	t0=$SECONDS
	"$t" >"$log" 2>&1
	rc=$?
	p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
	f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END {print s+0}')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi # crashed or exited early
	passed=$((passed + p))
	failed=$((failed + f))
	if [ "$f" -ne 0 ]; then failures+=("$name (see $log)"); echo "FAIL $name"; tail -20 "$log"; else echo "ok   $name ($p) $((SECONDS - t0))s"; fi
done

for t in tests/*/test_*.sh; do
	[ -f "$t" ] || continue
	case "$t" in *"$filter"*) ;; *) continue ;; esac
	log="$log_dir/$(basename "$t").log"
	t0=$SECONDS
	BUILD=$BUILD bash "$t" >"$log" 2>&1
	rc=$?
	record "$t (see $log)" $rc
	if [ $rc -eq 0 ]; then echo "ok   $t $((SECONDS - t0))s"; else echo "FAIL $t"; tail -20 "$log"; fi
done

if [ -n "$FUZZ_BUILD" ]; then
	for f in "$FUZZ_BUILD"/fuzz_*; do
		[ -x "$f" ] || continue
		case "$f" in *.o|*.d) continue ;; esac
		case "$f" in *"$filter"*) ;; *) continue ;; esac
		name=$(basename "$f")
		corpus=fuzz/corpus/${name#fuzz_}
		work=$(mktemp -d)
		[ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
		log="$log_dir/$name.log"
		"$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -artifact_prefix="$work/" "$work" >"$log" 2>&1
		rc=$?
		rm -rf "$work"
		record "$name (see $log)" $rc
		if [ $rc -eq 0 ]; then echo "ok   $name (fuzzed ${FUZZ_SECONDS}s)"; else echo "FAIL $name"; tail -20 "$log"; fi
	done
fi

for f in "${failures[@]+"${failures[@]}"}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
