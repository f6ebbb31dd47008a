#!/usr/bin/env bash
# The run-grid GPU checks in one script: the same command twice gives the same values on CUDA,
# then the MNIST grid's wall time with --jobs 1 and --jobs 8 on one GPU. Outputs to $OUT.
#
# Meant for a borrowed GPU machine with torch but no internet. Beforehand, on a machine that has
# the package index, put into the ignored folder .gpu/ (and carry it):
#   pip download --no-deps -d .gpu/wheels modAL-python scikit-fem
#   mkdir -p .gpu/MNIST && cp -r ../shared/data/MNIST/raw .gpu/MNIST/
# Then run, from the repository root:  OUT=/some/folder bash benchmarks/gpu_grid.sh
# Settings (environment): REPEATS (default 5), JOBS (default 8), EXTRA (more `bench run` flags,
# e.g. "--subset 2000 --rounds 2 --epochs 1" for a dry run on a CPU).
. "$(dirname "$0")/gpu_env.sh"
log="$OUT/grid.txt"
run() {  # run NAME FLAGS...: one `bench run` into $OUT/NAME, timed
  local name=$1; shift
  local start; start=$(date +%s)
  # shellcheck disable=SC2086
  python3 -m bench run --task mnist --seed 0 --no-download --quiet --out "$OUT/$name" ${EXTRA:-} "$@"
  echo "$name: wall time $(( $(date +%s) - start )) s ($*)" | tee -a "$log"
}
run twice-a --strategy random --repeats 1
run twice-b --strategy random --repeats 1
python3 - "$OUT" <<'PY' | tee -a "$log"
import sys, pandas as pd
a, b = (pd.read_csv(f"{sys.argv[1]}/{n}/rounds.csv")["value"] for n in ("twice-a", "twice-b"))
print("same command twice on", pd.read_json(f"{sys.argv[1]}/twice-a/manifest.json", typ="series")["device"],
      "identical values:", a.tolist() == b.tolist(), a.tolist())
PY
run jobs1 --strategy all --repeats "${REPEATS:-5}" --jobs 1
run jobsN --strategy all --repeats "${REPEATS:-5}" --jobs "${JOBS:-8}"
python3 - "$OUT" <<'PY' | tee -a "$log"
import sys, pandas as pd
k = ["strategy", "repeat", "round"]
a, b = (pd.read_csv(f"{sys.argv[1]}/{n}/rounds.csv").sort_values(k)["value"].tolist() for n in ("jobs1", "jobsN"))
print("--jobs N values equal --jobs 1:", a == b)
PY
tar czf "$OUT/runs.tgz" -C "$OUT" twice-a twice-b jobs1 jobsN && rm -r "$OUT"/twice-a "$OUT"/twice-b "$OUT"/jobs1 "$OUT"/jobsN
