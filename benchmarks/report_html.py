"""What ``report.html`` adds to a report's time: the whole report (:func:`bench.report.tables.write_report`:
tables, figures and the page) against the page alone (:func:`bench.report.run_page.write_run_page`),
on the reference MNIST results (9 strategies x 5 repeats x 10 rounds, three runs merged).

    python benchmarks/report_html.py [--times 5]

Prints the best and median wall time of each and the page's size. Set ``OMP_NUM_THREADS=1`` for
the one-core figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a checkout that is not installed

from bench.report import tables  # noqa: E402
from bench.report.tables import metric_info, read_rounds, report_sources, write_report  # noqa: E402

RUNS = [ROOT / "results/reference/mnist" / sub for sub in ("", "runs/field", "runs/vaal")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=5)
    args = parser.parse_args()
    rounds = read_rounds(RUNS)
    metric, sources = metric_info(RUNS, rounds), report_sources(RUNS)
    captured: list = []
    write_page = tables.write_run_page

    def keep(out, frames, given):  # the page's inputs, to time the page alone
        captured.append((out, frames, given))
        return write_page(out, frames, given)

    whole, page = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.times):
            tables.write_run_page = keep
            start = time.perf_counter()
            write_report(rounds, Path(tmp), metric, sources=sources, paper=True)
            whole.append(time.perf_counter() - start)
            tables.write_run_page = write_page
            start = time.perf_counter()
            path = write_page(*captured[-1])
            page.append(time.perf_counter() - start)
        size = path.stat().st_size
    for name, times in (("whole report", whole), ("report.html alone", page)):
        print(f"{name}: best {min(times):.3f} s, median {statistics.median(times):.3f} s over {args.times}")
    print(f"report.html: {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
