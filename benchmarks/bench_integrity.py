"""What checking shard checksums on first open costs `verify` and `export` (issue 13: keep them within 10 %).

    PYTHONPATH=. python benchmarks/bench_integrity.py [N]      # N Wilson 30×30 examples (default 200,000)

Generates the corpus once (in the page cache afterwards), then times whole `reasonless verify CORPUS` and
`reasonless export CORPUS --format tokens` processes, medians of 3, with the check as shipped and with the check
switched off in the child process (``Shard._open`` with CRC skipped), and the CRC-32 of every shard file alone.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATCH = ("import reasonless.corpus as c; from reasonless.cli import main; "
         "c.crc32_file = lambda p: None; "
         "orig = c.Shard._open\n"
         "def _open(self, name):\n"
         "    self._checked.add(name)\n"
         "    return orig(self, name)\n"
         "c.Shard._open = _open\n"
         "import sys; sys.exit(main(sys.argv[1:]))")


def timed(argv: list[str], check: bool) -> float:
    cmd = [sys.executable, "-m", "reasonless", *argv] if check else [sys.executable, "-c", PATCH, *argv]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(n: int) -> None:
    from reasonless.atomic import crc32_file
    from reasonless.corpus import generate

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "w30"
        generate(corpus, "wilson", n, rows=30, cols=30, seed=1)
        files = sorted(corpus.glob("shard-*/*.npy"))
        t0 = time.perf_counter()
        for f in files:
            crc32_file(f)
        crc = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in files)
        print(f"{n:,} Wilson 30x30 examples, {size / 1e6:.0f} MB of shard files; CRC-32 of all: {crc:.2f} s "
              f"({size / crc / 1e9:.2f} GB/s)")
        print("| command | checked (s) | unchecked (s) | cost |")
        print("|---|---:|---:|---:|")
        for name, argv in (("verify", ["verify", str(corpus)]),
                           ("export tokens", ["export", str(corpus), "--format", "tokens", "--quiet", "--out",
                                              str(Path(tmp) / "tok")])):
            runs = {True: [], False: []}
            for _ in range(3):
                for check in (True, False):
                    if name.startswith("export"):
                        subprocess.run(["rm", "-rf", str(Path(tmp) / "tok")], check=True)
                    runs[check].append(timed(argv, check))
            a, b = statistics.median(runs[True]), statistics.median(runs[False])
            print(f"| {name} | {a:.2f} | {b:.2f} | {100 * (a - b) / b:+.1f} % |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
