"""How long `finscore --help` takes (issue 16: under 0.5 s; it once imported torch, 3.8-4.8 s).

    .venv/bin/python bench/cli_help.py [--runs 10] [--limit 0.5]

Runs the installed entry point (``finscore --help``, the console script next to this Python)
``--runs`` times after one warm-up run, prints min / median / max wall seconds and which heavy
modules ``--help`` imported, and exits 1 when the median exceeds ``--limit``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

HEAVY = ("torch", "onnxruntime", "confluent_kafka", "numpy", "finscore.compression")


@click.command()
@click.option("--runs", default=10, show_default=True)
@click.option("--limit", default=0.5, show_default=True, help="Seconds the median may take.")
def main(runs: int, limit: float) -> None:
    """Time `finscore --help` end to end (interpreter start included)."""
    exe = Path(sys.executable).with_name("finscore")
    cmd = (
        [str(exe), "--help"]
        if exe.exists()
        else [sys.executable, "-m", "finscore.app.cli", "--help"]
    )
    subprocess.run(cmd, capture_output=True, check=True)  # warm-up (page cache, .pyc)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    probe = (
        "import sys\nfrom finscore.app.cli.group import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)"
    )
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stderr
    med = statistics.median(times)
    click.echo(
        f"finscore --help: median {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}, "
        f"{runs} runs; limit {limit} s); heavy modules imported: {heavy.strip()}"
    )
    sys.exit(0 if med <= limit else 1)


if __name__ == "__main__":
    main()
