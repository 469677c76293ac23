#!/usr/bin/env bash
# The whole test suite on a fresh machine (Debian or Ubuntu): installs what the tests need and is
# missing (scripts/setup.sh --extras: idempotent, only missing packages), builds build/, runs
# CTest, prints the reason of every test that skipped, and ends with the line
# "N passed, N failed, N skipped". Exits non-zero when a test failed.
#
#   scripts/test.sh                    everything
#   scripts/test.sh -R test_status     arguments go to ctest
#   BUILD_DIR=... CMAKE_ARGS="..." scripts/test.sh   another build directory / cmake options
set -euo pipefail
cd "$(dirname "$0")/.."

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

scripts/setup.sh --extras
build="${BUILD_DIR:-build}"
junit=$(mktemp --suffix=.xml)
trap 'rm -f "$junit"' EXIT

rc=0
ctest --test-dir "$build" --output-on-failure --output-junit "$junit" "$@" || rc=$?

# ctest shows the output of failed tests only: a skipped test's reason (its output, which says
# what is missing) comes from the JUnit report, as do the counts
[[ -s "$junit" ]] || { echo "test.sh: ctest wrote no report (exit $rc)" >&2; exit "$((rc ? rc : 1))"; }
python3 - "$junit" <<'PY'
import sys
import xml.etree.ElementTree as ET

cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
n = {"passed": 0, "failed": 0, "skipped": 0}
for c in cases:
    if c.find("skipped") is not None or c.get("status") in ("notrun", "disabled"):
        n["skipped"] += 1
        out = (c.findtext("system-out") or "").strip().splitlines()
        print(f"skipped {c.get('name')}: {out[-1] if out else '(it printed no reason)'}")
    elif c.get("status") == "run" and c.find("failure") is None:
        n["passed"] += 1
    else:
        n["failed"] += 1
print(f"{n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped")
PY
exit "$rc"
