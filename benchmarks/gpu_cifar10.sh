#!/usr/bin/env bash
# The CIFAR-10 GPU session in one script: speed benchmark, then the reference run, outputs to $OUT.
#
# Meant for a borrowed GPU machine with torch but no internet. Beforehand, on a machine that has
# the package index, put into the ignored folder .gpu/ (and carry it):
#   pip download --no-deps -d .gpu/wheels modAL-python scikit-fem
#   cp ../shared/data/cifar10-jpeg.zip .gpu/
# Then run, from the repository root:  OUT=/some/folder bash benchmarks/gpu_cifar10.sh
# Settings (environment): REPEATS (default 5), STRATEGIES (default random,snn), EXTRA (more
# `bench run` flags, e.g. "--subset 2000 --rounds 2 --epochs 1" for a dry run on a CPU), SPEED
# (default 1; 0 skips the speed benchmark, as benchmarks/gpu_field.sh does).
. "$(dirname "$0")/gpu_env.sh"
if [ "${SPEED:-1}" != 0 ]; then
  python3 benchmarks/cifar10_speed.py --batch-sizes "${BATCHES:-128,512}" 2>&1 | tee "$OUT/speed.txt"
fi
start=$(date +%s)
# shellcheck disable=SC2086
python3 -m bench run --task cifar10 --strategy "${STRATEGIES:-random,snn}" --repeats "${REPEATS:-5}" \
  --seed 0 --no-download --quiet --out "$OUT/run" ${EXTRA:-} || status=$?
echo "wall time $(( $(date +%s) - start )) s" | tee -a "$OUT/speed.txt"
cp "$BENCH_CACHE"/generative/alphagan-cifar10-*.json "$OUT/run/" 2>/dev/null || true
# few files come back from a borrowed machine: the whole run folder as one archive
tar czf "$OUT/run.tgz" -C "$OUT" run && rm -r "$OUT/run"
exit "${status:-0}"
