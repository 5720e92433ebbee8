"""Run bench/bench_ops.py and print each group's ratios to our kernel (markdown).

    python bench/report.py [-k EXPR] [--json OUT.json]

Ratio = baseline time / our time (> 1: ours is faster). For preprocess it also prints frames/s and the
achieved bandwidth (bytes read + written / time) next to a plain copy of the same bytes.
"""
import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default=None, help="pytest -k expression to select benchmarks")
    ap.add_argument("--json", default=None, help="keep pytest-benchmark's JSON here")
    ap.add_argument("--from-json", default=None, help="only print the table of an earlier run")
    args = ap.parse_args()
    path = args.from_json or args.json or tempfile.mktemp(suffix=".json")
    if not args.from_json:
        cmd = [sys.executable, "-m", "pytest", os.path.join(os.path.dirname(__file__), "bench_ops.py"), "-q",
               "-p", "no:cacheprovider", f"--benchmark-json={path}", "--benchmark-disable-gc"]
        if args.k:
            cmd += ["-k", args.k]
        # from a neutral folder, without the script's folder on sys.path: the installed vlmreward is benchmarked,
        # not the source tree (which has no compiled kernels unless built in place)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
                       env=dict(os.environ, PYTHONSAFEPATH="1"))
    data = json.load(open(path))
    groups = collections.defaultdict(dict)
    for b in data["benchmarks"]:
        groups[b["group"]][b["params"]["impl"]] = b
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"BENCH_THREADS={os.environ.get('BENCH_THREADS', '2')}\n")
    print("| group | ours (ms) | frames/s | GB/s (copy GB/s) | pil | tv2 | interp | torch |")
    print("|---|---|---|---|---|---|---|---|")
    for name, impls in groups.items():
        ours = impls["ours"]["stats"]["min"]
        info = impls["ours"].get("extra_info", {})
        fps = f"{info['frames'] / ours:.0f}" if "frames" in info else ""
        gbs = ""
        if "bytes" in info:
            gbs = f"{info['bytes'] / ours / 1e9:.2f}"
            if "copy" in impls:
                gbs += f" ({info['bytes'] / impls['copy']['stats']['min'] / 1e9:.2f})"
        cells = []
        for impl in ("pil", "tv2", "interp", "torch"):
            cells.append(f"{impls[impl]['stats']['min'] / ours:.1f}x" if impl in impls else "")
        print(f"| {name} | {ours * 1e3:.2f} | {fps} | {gbs} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
