"""`popularity rank` against the Polars reference (scripts/bench/polars_rank.py)
on the same generated data, both on 2 threads, alternately: issue 14 §4,
docs/benchmarks.md "Against Polars".

    python3 scripts/bench/compare_polars.py                # 10M tracks x 14 days, 5 rounds
    python3 scripts/bench/compare_polars.py --tracks 1000000 --runs 3

Installs Polars (POLARS_VERSION, default 2.1.0) into the project's .venv the
first time; builds the release CLI (`cargo build --release -p popularity-cli`,
into CARGO_TARGET_DIR or target/) unless --no-build; generates the data set
as `popularity-bench rank` does (seed 42, ending 2026-11-18, kept in
<dir>/tracks-N-days-D) the first time. Each round runs both once -- ours
first in odd rounds, Polars first in even ones -- as child processes with
their outputs on --out (tmpfs by default, emptied before every run), and
reads wall time (spawn to exit) and peak RSS (`wait4`'s rusage) of each.
Prints every round's times, ratio (Polars / ours: how many times faster we
are), memory ratio (ours / Polars) and the 1-minute load average before the
round, then the median and worst of each. With --verify (the default) the
last round's parts of both are compared byte for byte.
"""

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
POLARS_SCRIPT = os.path.join(ROOT, "scripts", "bench", "polars_rank.py")
END_DATE = "2026-11-18"
RUN_TIME = "2026-11-19T03:00:00Z"
RUN_ID = "20261119030000"


def say(text):
    print(f"compare_polars: {text}", file=sys.stderr, flush=True)


def ensure_polars():
    version = os.environ.get("POLARS_VERSION", "2.1.0")
    if not os.access(VENV_PYTHON, os.X_OK):
        say(f"creating {os.path.dirname(os.path.dirname(VENV_PYTHON))} (once)")
        subprocess.run([sys.executable, "-m", "venv", os.path.join(ROOT, ".venv")], check=True)
    probe = subprocess.run([VENV_PYTHON, "-c", "import polars; print(polars.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != version:
        say(f"installing polars=={version} into .venv (once)")
        subprocess.run([VENV_PYTHON, "-m", "pip", "install", "--quiet", f"polars=={version}"], check=True)
    return version


def popularity_binary(build, binary=None):
    if binary:
        return os.path.abspath(binary)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    if build:
        say("cargo build --release -p popularity-cli")
        subprocess.run(["cargo", "build", "--release", "-p", "popularity-cli"], cwd=ROOT, check=True)
    binary = os.path.join(target, "release", "popularity")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is missing: build it (cargo build --release -p popularity-cli)")
    return binary


def ensure_data(binary, folder, tracks, days):
    data = os.path.join(folder, f"tracks-{tracks}-days-{days}")
    if not os.path.exists(os.path.join(data, ".complete")):
        say(f"generating {tracks} tracks x {days} days into {data} (once)")
        subprocess.run(
            [binary, "generate", "--tracks", str(tracks), "--days", str(days), "--end-date", END_DATE,
             "--seed", "42", "--out", data],
            check=True,
        )
        open(os.path.join(data, ".complete"), "w").close()
    return data


def measured(command, env):
    """Wall seconds, peak RSS bytes and CPU seconds of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Nothing reads stderr while waiting: both print only a few lines.
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {child.returncode}:\n{child.stderr.read().decode()}")
    child.stderr.close()
    return seconds, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--runs", type=int, default=5, help="rounds (each runs both once)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", default=os.path.join(ROOT, "target", "bench-data"), help="data sets are kept here")
    parser.add_argument("--out", default="/dev/shm/compare-polars", help="outputs (emptied before every run)")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--binary", help="a popularity binary to measure instead of building one (e.g. a saved copy)")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--polars-sort", choices=["stable", "two-keys"], help="polars_rank.py --sort (default: its own)")
    args = parser.parse_args()

    version = ensure_polars()
    binary = popularity_binary(not args.no_build, args.binary)
    data = ensure_data(binary, args.dir, args.tracks, args.days)
    ours_out, polars_out = os.path.join(args.out, "ours"), os.path.join(args.out, "polars")
    commands = {
        "ours": (
            [binary, "rank", "--time", RUN_TIME, "--data", data, "--out", ours_out, "--threads", str(args.threads)],
            dict(os.environ),
            ours_out,
        ),
        "polars": (
            [VENV_PYTHON, POLARS_SCRIPT, "--time", RUN_TIME, "--data", data, "--out", polars_out]
            + (["--sort", args.polars_sort] if args.polars_sort else []),
            dict(os.environ, POLARS_MAX_THREADS=str(args.threads)),
            polars_out,
        ),
    }
    say(f"polars {version}, {binary}, {data}, {args.threads} threads, outputs in {args.out}")
    print(f"{'round':>5} {'load1':>5} {'ours s':>7} {'polars s':>8} {'ratio':>6} {'ours MB':>8} {'polars MB':>9} "
          f"{'mem ratio':>9} {'ours cpu':>8} {'polars cpu':>10}", flush=True)
    rows = []
    for round_ in range(1, args.runs + 1):
        load = os.getloadavg()[0]
        order = ["ours", "polars"] if round_ % 2 == 1 else ["polars", "ours"]
        result = {}
        for name in order:
            command, env, out = commands[name]
            shutil.rmtree(out, ignore_errors=True)
            result[name] = measured(command, env)
        (ours_s, ours_rss, ours_cpu), (polars_s, polars_rss, polars_cpu) = result["ours"], result["polars"]
        rows.append((load, ours_s, polars_s, polars_s / ours_s, ours_rss, polars_rss, ours_rss / polars_rss))
        print(f"{round_:>5} {load:>5.2f} {ours_s:>7.2f} {polars_s:>8.2f} {polars_s / ours_s:>5.2f}x "
              f"{ours_rss / 1e6:>8.0f} {polars_rss / 1e6:>9.0f} {ours_rss / polars_rss:>8.3f}x "
              f"{ours_cpu:>8.2f} {polars_cpu:>10.2f}", flush=True)
    ratios = [r[3] for r in rows]
    memory = [r[6] for r in rows]
    print(f"time ratio (Polars / ours): median {statistics.median(ratios):.2f}x, worst {min(ratios):.2f}x, "
          f"best {max(ratios):.2f}x")
    print(f"memory ratio (ours / Polars): median {statistics.median(memory):.3f}x, worst {max(memory):.3f}x")
    print(f"ours: median {statistics.median(r[1] for r in rows):.2f} s, peak {max(r[4] for r in rows) / 1e6:.0f} MB; "
          f"polars {version}: median {statistics.median(r[2] for r in rows):.2f} s, "
          f"peak {max(r[5] for r in rows) / 1e6:.0f} MB; load1 {min(r[0] for r in rows):.2f}-{max(r[0] for r in rows):.2f}")
    if not args.no_verify:
        differ = []
        for data_type in ("track_popularity", "artist_popularity", "product_popularity"):
            ours = os.path.join(ours_out, "reports", data_type, RUN_ID)
            theirs = os.path.join(polars_out, "reports", data_type, RUN_ID)
            names = sorted(os.listdir(ours))
            if names != sorted(os.listdir(theirs)):
                differ.append(f"{data_type}: parts {names} vs {sorted(os.listdir(theirs))}")
                continue
            differ += [f"{data_type}/{n}" for n in names
                       if not filecmp.cmp(os.path.join(ours, n), os.path.join(theirs, n), shallow=False)]
        if differ:
            sys.exit(f"the reports differ: {', '.join(differ)}")
        print("reports: byte-identical (every part of the three reports)")


if __name__ == "__main__":
    main()
