"""Time ``divssl --help`` (the CLI's start-up): wall and CPU seconds of the process, best of N.

Run on a quiet machine for docs/benchmarks.md (on a busy one, wall time measures the neighbours;
the CPU seconds of the child stay meaningful)::

    python benchmarks/bench_cli_help.py --repeats 5

Also lists the heavy modules imported by the help text (there should be none).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

HEAVY_PROBE = """
import sys
from divssl import cli
sys.argv = ["divssl", "--help"]
try:
    cli.main()
except SystemExit:
    pass
heavy = [m for m in ("torch", "pandas", "matplotlib", "scipy", "sklearn") if m in sys.modules]
print(",".join(heavy), file=sys.stderr)
"""


def time_help() -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``python -m divssl.cli --help`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "divssl.cli", "--help"], capture_output=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = [time_help() for _ in range(args.repeats)]
    heavy = subprocess.run(
        [sys.executable, "-c", HEAVY_PROBE], capture_output=True, text=True, check=True
    ).stderr.strip()
    walls, cpus = sorted(w for w, _ in runs), sorted(c for _, c in runs)
    print(f"divssl --help, {args.repeats} runs")
    print(f"  wall s: best {walls[0]:.3f}, median {walls[len(walls) // 2]:.3f}")
    print(f"  CPU s:  best {cpus[0]:.3f}, median {cpus[len(cpus) // 2]:.3f}")
    print(f"  heavy modules imported: {heavy or 'none'}")


if __name__ == "__main__":
    main()
