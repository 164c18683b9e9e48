#!/usr/bin/env bash
# The gauge CLI end to end: help, bad input (one line on stderr, exit 2, nothing written), a real
# quick run whose results file validates against the schema, and `gauge compare` exit codes on
# crafted regressions.
set -uo pipefail
gauge=$1
root=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
passes=0

pass() { passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_usage_error NAME ARGS...: exit code 2, exactly one line on stderr, nothing in $tmp/out.
expect_usage_error() {
  local name=$1; shift
  rm -rf "$tmp/out"; mkdir -p "$tmp/out"
  "$gauge" "$@" >"$tmp/stdout" 2>"$tmp/stderr"
  local code=$?
  local lines
  lines=$(wc -l <"$tmp/stderr")
  if [ "$code" -ne 2 ]; then fail "$name: exit $code, expected 2 ($(cat "$tmp/stderr"))"; return; fi
  if [ "$lines" -ne 1 ]; then fail "$name: $lines lines on stderr, expected 1:"; cat "$tmp/stderr"; return; fi
  if [ -n "$(ls -A "$tmp/out")" ]; then fail "$name: left files behind: $(ls "$tmp/out")"; return; fi
  echo "ok: $name -> $(cat "$tmp/stderr")"
  pass
}

"$gauge" --help >/dev/null && pass || fail "gauge --help"
# Outputs go to files before grep -q reads them: under pipefail, grep -q leaving early would make
# the writer die of SIGPIPE and fail the check.
for c in info list run compare vectors report; do
  "$gauge" $c --help >"$tmp/help" && grep -q "usage: gauge $c" "$tmp/help" && pass || fail "gauge $c --help"
done
"$gauge" info >"$tmp/info" && grep -q "^cpu:" "$tmp/info" && pass || fail "gauge info"
"$gauge" list >"$tmp/list" && grep -q "^precision/cast_f32_to_narrow/" "$tmp/list" && grep -q "^optim/adamw_fp32/" "$tmp/list" \
  && pass || fail "gauge list"

expect_usage_error "unknown command" frobnicate
expect_usage_error "unknown option" run --frobnicate
expect_usage_error "unknown suite" run --suite no_such_suite --out "$tmp/out/r.json"
expect_usage_error "filter matching nothing" run --filter 'no_such_case' --out "$tmp/out/r.json"
expect_usage_error "bad regex" run --filter '([' --out "$tmp/out/r.json"
expect_usage_error "unknown device" run --device tpu --out "$tmp/out/r.json"
expect_usage_error "bad repetitions" run --repetitions 0 --out "$tmp/out/r.json"
expect_usage_error "list filter matching nothing" list --filter 'f99'
expect_usage_error "unwritable path" run --quick --out "$tmp/out/missing-dir/r.json"
expect_usage_error "output is a directory" run --quick --out "$tmp/out"
if grep -q "^gpu: *none" "$tmp/info"; then
  expect_usage_error "absent GPU with --device cuda" run --device cuda --quick --out "$tmp/out/r.json"
fi
expect_usage_error "compare needs two files" compare "$tmp/a.json"
expect_usage_error "compare missing file" compare "$tmp/nope.json" "$tmp/nope2.json"
echo '{"schema_version": 1, "records": [' >"$tmp/malformed.json"
expect_usage_error "compare malformed file" compare "$tmp/malformed.json" "$tmp/malformed.json"
echo '{"schema_version": 99, "created_utc": "x", "machine": {}, "records": []}' >"$tmp/future.json"
expect_usage_error "compare wrong schema version" compare "$tmp/future.json" "$tmp/future.json"

# A real quick run.
if "$gauge" run --quick --repetitions 5 --min-time 0.001 --out "$tmp/a.json" >"$tmp/run.out" 2>"$tmp/run.err"; then
  pass
else
  fail "gauge run --quick"; cat "$tmp/run.out" "$tmp/run.err"
fi
grep -q "precision/cast_f32_to_narrow" "$tmp/run.out" && pass || fail "the table lists the casts"
[ -f "$tmp/a.gbench.json" ] && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['benchmarks']" "$tmp/a.gbench.json" \
  && pass || fail "Google Benchmark JSON beside the results"
if /usr/bin/python3 -c "import jsonschema" 2>/dev/null; then
  if /usr/bin/python3 - "$root/results/schema.json" "$tmp/a.json" <<'PY'
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.validate(json.load(open(sys.argv[2])), schema)
PY
  then pass; else fail "results file does not validate against results/schema.json"; fi
else
  echo "note: python3-jsonschema missing, schema validation not run (scripts/setup installs it)"
fi

"$gauge" report "$tmp/a.json" >"$tmp/report.txt" && grep -q "precision/cast_f32_to_narrow" "$tmp/report.txt" && pass || fail "gauge report"
"$gauge" report "$tmp/a.json" --markdown >"$tmp/report.md" && grep -q "^| precision/cast_f32_to_narrow" "$tmp/report.md" && pass || fail "gauge report --markdown"
expect_usage_error "report of a malformed file" report "$tmp/malformed.json"

# compare: identical -> 0; reference twice as slow -> 1; an agreement regression -> 1.
"$gauge" compare "$tmp/a.json" "$tmp/a.json" >"$tmp/cmp.out" 2>&1 && pass || { fail "compare identical"; cat "$tmp/cmp.out"; }
python3 - "$tmp/a.json" "$tmp/slow.json" "$tmp/broken.json" <<'PY'
import json, sys
base = json.load(open(sys.argv[1]))
slow = json.loads(json.dumps(base))
for r in slow["records"]:
    if r.get("timing"):
        t = r["timing"]
        t["repetition_seconds"] = [s * 2 for s in t["repetition_seconds"]]
        for k in ("median_seconds", "min_seconds", "mean_seconds", "stddev_seconds"):
            t[k] *= 2
json.dump(slow, open(sys.argv[2], "w"))
broken = json.loads(json.dumps(base))
r = broken["records"][0]
r["status"] = "disagree"; r["timing"] = None; r["throughput"] = None
json.dump(broken, open(sys.argv[3], "w"))
PY
"$gauge" compare "$tmp/a.json" "$tmp/slow.json" >"$tmp/cmp.out" 2>&1
[ $? -eq 1 ] && pass || { fail "compare must exit 1 on a 2x slowdown"; cat "$tmp/cmp.out"; }
"$gauge" compare "$tmp/a.json" "$tmp/broken.json" >"$tmp/cmp.out" 2>&1
[ $? -eq 1 ] && pass || { fail "compare must exit 1 on an agreement regression"; cat "$tmp/cmp.out"; }

# Conformance vectors of the real suites: export, reference outputs as the candidate pass, one
# perturbed element fails and is named, bad input exits 2.
# The casts, and the single-step AdamW point that the NumPy example reproduces too.
vec_filter='^precision/cast_(f32_to_narrow|narrow_to_f32)/|^optim/adamw_fp32/.*steps=1/'
if "$gauge" vectors export --filter "$vec_filter" --out "$tmp/vec" >"$tmp/vec.out" 2>&1; then pass; else fail "vectors export"; cat "$tmp/vec.out"; fi
grep -q '"operation": "optim/adamw_fp32"' "$tmp/vec/manifest.json" && grep -q '"beta2"' "$tmp/vec/manifest.json" && pass \
  || fail "the manifest carries the optimizer case and its hyper-parameters"
"$gauge" vectors export --filter "$vec_filter" --out "$tmp/vec2" >/dev/null 2>&1
if diff -r "$tmp/vec" "$tmp/vec2" >/dev/null; then pass; else fail "two exports differ"; fi
mkdir -p "$tmp/cand"
cp "$tmp"/vec/*.out.*.npy "$tmp/cand/"
"$gauge" vectors check "$tmp/vec" --candidate "$tmp/cand" >"$tmp/check.out" 2>&1 && pass || { fail "vectors check of the reference itself"; cat "$tmp/check.out"; }
victim=$(ls "$tmp"/cand/precision.cast_narrow_to_f32.*.bf16.out.y.npy | head -n1)
python3 - "$victim" <<'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
header = 10 + struct.unpack("<H", data[8:10])[0]
offset = header + 4 * 1234                      # element [1234] of a float32 vector
data[offset + 3] ^= 0x40                        # flip an exponent bit: far beyond bit-exactness
open(sys.argv[1], "wb").write(bytes(data))
PY
"$gauge" vectors check "$tmp/vec" --candidate "$tmp/cand" >"$tmp/check.out" 2>&1
code=$?
if [ $code -eq 1 ] && grep -q "\[1234\]" "$tmp/check.out"; then pass; else fail "perturbed vectors: exit $code"; cat "$tmp/check.out"; fi
rm "$tmp"/cand/precision.cast_f32_to_narrow.*.f16.out.y.npy
"$gauge" vectors check "$tmp/vec" --candidate "$tmp/cand" >"$tmp/check.out" 2>&1
grep -q "^MISSING precision/cast_f32_to_narrow" "$tmp/check.out" && pass || { fail "missing candidate"; cat "$tmp/check.out"; }
mkdir -p "$tmp/empty"
expect_usage_error "vectors check without manifest" vectors check "$tmp/empty" --candidate "$tmp/cand"
sed 's/"schema_version": 1/"schema_version": 2/' "$tmp/vec/manifest.json" >"$tmp/empty/manifest.json"
expect_usage_error "vectors manifest of another schema version" vectors check "$tmp/empty" --candidate "$tmp/cand"
cp "$tmp"/vec/precision.cast_f32_to_narrow.*.bf16.in.x.npy "$(ls "$tmp"/cand/precision.cast_f32_to_narrow.*.bf16.out.y.npy)"
expect_usage_error "vectors candidate of the wrong dtype" vectors check "$tmp/vec" --candidate "$tmp/cand"
expect_usage_error "vectors export without --out" vectors export
expect_usage_error "vectors export bad size" vectors export --size huge --out "$tmp/out/v"

# The NumPy example: recompute the casts in NumPy and pass the check.
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
  if /usr/bin/python3 "$root/scripts/vectors_example.py" "$tmp/vec" "$tmp/numpy" --gauge "$gauge" >"$tmp/np.out" 2>&1; then
    pass
  else
    fail "scripts/vectors_example.py"; cat "$tmp/np.out"
  fi
else
  echo "note: python3-numpy missing, vectors_example.py not run (scripts/setup installs it)"
fi

echo "cli: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
