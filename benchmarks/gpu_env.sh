# Sourced by the GPU session scripts: strict mode, the repository root, $OUT required, caches and
# data under the carried folder .gpu/, and the wheels the GPU machine lacks installed from it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${OUT:?set OUT to the folder that receives the results}"
export BENCH_CACHE="${BENCH_CACHE:-$PWD/.gpu/cache}" BENCH_DATA="$PWD/.gpu"
if ! python3 -c "import modAL, skfem, bench" 2>/dev/null; then
  python3 -m pip install --quiet --no-deps .gpu/wheels/*.whl
  python3 -m pip install --quiet --no-deps --no-build-isolation -e .
fi
