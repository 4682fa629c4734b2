"""Air-gap bundles: `hubwarden export` and `hubwarden import` of a multi-GB repo against `cp`.

    python bench/airgap_bench.py                  # from the repository root; 2 GiB, ~2 minutes
    python bench/airgap_bench.py --size-mb 256    # quick check of the bench itself
    python bench/airgap_bench.py --workdir DIR    # needs ~5 x size free there

What runs, each command in its own process under `/usr/bin/time -v` (wall time and the peak RSS
of the process and the children it waited for, i.e. the scan worker too):

1. the fake Hub (bench/_upstream.py) serves one repo holding one valid safetensors file of
   `--size-mb` MiB (pseudo-random data, so nothing compresses or is sparse);
2. mirror A prefetches it (`hubwarden prefetch`: fetched, verified, scanned; not measured), makes
   its key; mirror B trusts that key;
3. measured: `hubwarden export` of the repo into a tar, against `cp` of A's stored blob (the
   same bytes) to a new file, and against `cp` followed by `sync` of that file (export fsyncs
   its output, cp does not);
4. measured: `hubwarden import` of the tar on B (signature, every byte hashed as it streams,
   staged and fsynced, scanned in a worker, moved into place, one transaction), against `cp`
   of the tar into B's data directory (+ `sync`); then the same import again (everything
   already present: it streams and checks the bundle, writes nothing).

The page cache is warm for every command alike (nothing is dropped between them). Figures are
printed as a table (and `--json FILE` writes them); they decide nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._files import write_safetensors  # noqa: E402 - needs the repository root on sys.path
from bench._procs import Upstream  # noqa: E402

REPO = "bench/airgap"
NAME = "model.safetensors"
MiB = 1024 * 1024
_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def measured(argv: list[str], log: Path) -> dict[str, float]:
    """Run `argv` under /usr/bin/time -v: wall seconds and peak RSS in MiB."""
    started = time.monotonic()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    wall = time.monotonic() - started
    log.write_text(f"$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        raise SystemExit(
            f"{argv[:4]} failed ({done.returncode}); see {log}:\n{done.stderr[-3000:]}"
        )
    match = _MAX_RSS.search(done.stderr)
    return {"s": wall, "rss_mib": int(match[1]) / 1024 if match else float("nan")}


def hubwarden(*args: str) -> list[str]:
    return [sys.executable, "-m", "proxy", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=2048, help="the file's size (MiB)")
    parser.add_argument("--workdir", type=Path, help="where to work (a temp dir by default)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not Path("/usr/bin/time").exists():
        raise SystemExit("needs /usr/bin/time (apt-get install time)")
    work = Path(tempfile.mkdtemp(prefix="airgap-bench-", dir=args.workdir))
    try:
        figures = run(work, args.size_mb * MiB)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    show(figures, args.size_mb * MiB)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def run(work: Path, size: int) -> dict[str, dict[str, float]]:
    source = work / "upstream" / NAME
    source.parent.mkdir()
    print(f"writing a {size / MiB:.0f} MiB safetensors file…", file=sys.stderr)
    write_safetensors(source, size, seed=8)
    upstream = Upstream.start(REPO, {NAME: source}, work / "upstream.log")
    figures: dict[str, dict[str, float]] = {}
    try:
        a, b = work / "a", work / "b"
        a.mkdir()
        b.mkdir()
        a_cfg = work / "a.toml"
        a_cfg.write_text(f'upstream = "{upstream.hub}"\ndata_dir = "{a}"\n')
        b_cfg = work / "b.toml"
        b_cfg.write_text(f'data_dir = "{b}"\noffline = true\n')
        print("prefetching on A…", file=sys.stderr)
        measured(hubwarden("prefetch", REPO, "--json", "--config", str(a_cfg)), work / "p.log")
        measured(hubwarden("keys", "create", "--config", str(a_cfg)), work / "k.log")
        public = subprocess.run(
            hubwarden("keys", "show", "--config", str(a_cfg)),
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        ).stdout
        (work / "dmz.pub").write_bytes(public)
        measured(
            hubwarden(
                "keys", "trust", str(work / "dmz.pub"), "--name", "dmz", "--config", str(b_cfg)
            ),
            work / "t.log",
        )
        blob = max((a / "blobs").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
        bundle = work / "bundle.tar"
        print("measuring…", file=sys.stderr)
        figures["export"] = measured(
            hubwarden(
                "export", "--repo", REPO, "--out", str(bundle), "--json", "--config", str(a_cfg)
            ),
            work / "export.log",
        )
        figures["cp blob"] = measured(["cp", str(blob), str(work / "copy1")], work / "cp1.log")
        figures["cp blob + sync"] = measured(
            ["sh", "-c", f'cp "{blob}" "{work}/copy2" && sync -f "{work}/copy2"'],
            work / "cp2.log",
        )
        figures["import"] = measured(
            hubwarden("import", str(bundle), "--json", "--config", str(b_cfg)),
            work / "import.log",
        )
        figures["cp bundle + sync"] = measured(
            ["sh", "-c", f'cp "{bundle}" "{b}/copy" && sync -f "{b}/copy"'], work / "cp3.log"
        )
        figures["import again (all present)"] = measured(
            hubwarden("import", str(bundle), "--json", "--config", str(b_cfg)),
            work / "import2.log",
        )
        figures["bundle"] = {"bytes": float(bundle.stat().st_size), "file_bytes": float(size)}
    finally:
        upstream.stop()
    return figures


def show(figures: dict[str, dict[str, float]], size: int) -> None:
    print(f"\nexport/import of one {size / MiB:.0f} MiB ({size / 1e9:.2f} GB) safetensors file")
    print(f"{'command':<30} {'time':>9} {'MB/s':>8} {'peak RSS':>10}")
    for name, figure in figures.items():
        if "s" not in figure:
            continue
        rate = size / figure["s"] / 1e6
        print(f"{name:<30} {figure['s']:>8.2f}s {rate:>8.0f} {figure['rss_mib']:>7.1f} MiB")
    print(
        f"export / cp+sync = {figures['export']['s'] / figures['cp blob + sync']['s']:.2f}x; "
        f"import / cp+sync = {figures['import']['s'] / figures['cp bundle + sync']['s']:.2f}x"
    )


if __name__ == "__main__":
    main()
