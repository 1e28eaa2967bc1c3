"""`popularity rank` from a data bucket to a staging bucket on moto, at full size.

For each catalogue size: generates the data once (the project's generator,
28 days), starts a moto server of its own (objects spooled to --spool, on the
disk), uploads catalogue/ and plays/ into a data bucket, ranks into a staging
bucket under `/usr/bin/time -v`, and prints one table row: wall, CPU (user +
system), peak RSS, bytes read and written, and the per-phase times `rank`
logs (`elapsed_ms` of "inputs listed", "catalogue read", "plays scored",
"reports ranked", "report parts written", "run manifest published"). The
moto server is stopped after each size, so each size starts from an empty
server. Only 127.0.0.1 is contacted.

    cargo build --release -p popularity-cli
    .venv/bin/python scripts/bench/rank_through_moto.py \\
        --popularity ${CARGO_TARGET_DIR:-target}/release/popularity \\
        --work /var/tmp/rank-moto --tracks 25000000 50000000 100000000

Results and the machine's state go into docs/benchmarks.md by hand.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import boto3
from boto3.s3.transfer import TransferConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_TIME = "2026-11-19T03:00:00Z"
END_DATE = "2026-11-18"
PHASES = ["inputs listed", "catalogue read", "plays scored", "reports ranked", "report parts written",
          "run manifest published"]


def say(*parts):
    print("rank-through-moto:", *parts, file=sys.stderr, flush=True)


def generate(popularity, directory, tracks):
    if os.path.isdir(os.path.join(directory, "catalogue")):
        return
    say(f"generating {tracks:,} tracks x 28 days into {directory}")
    subprocess.run([popularity, "generate", "--tracks", str(tracks), "--days", "28", "--end-date", END_DATE,
                    "--seed", "42", "--out", directory], check=True)


def start_moto(spool):
    os.makedirs(spool, exist_ok=True)
    env = dict(os.environ, TMPDIR=spool)
    endpoint = subprocess.run(["bash", os.path.join(ROOT, "scripts", "emulator.sh"), "start"], env=env,
                              check=True, capture_output=True, text=True).stdout.strip()
    assert endpoint.startswith("http://127.0.0.1:"), endpoint
    return endpoint


def stop_moto(endpoint):
    port = endpoint.rsplit(":", 1)[1]
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "emulator.sh"), "stop", port], check=True)


def upload(s3, directory):
    s3.create_bucket(Bucket="data")
    s3.create_bucket(Bucket="staging")
    config = TransferConfig(max_concurrency=4, multipart_chunksize=64 << 20)
    total = 0
    for folder, _, files in os.walk(directory):
        for name in sorted(files):
            path = os.path.join(folder, name)
            key = os.path.relpath(path, directory)
            s3.upload_file(path, "data", key, Config=config)
            total += os.path.getsize(path)
    return total


def peak_and_cpu(time_output):
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_output).group(1))
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", time_output).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", time_output).group(1))
    return peak_kib * 1024, user + system


def phase_times(log):
    """elapsed_ms of each phase, from text or JSON log lines."""
    found = {}
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # tracing's colours
    for line in log.splitlines():
        for phase in PHASES:
            if phase in line:
                match = re.search(r"elapsed_ms\"?[=:] ?(\d+)", line)
                if match:
                    found[phase] = int(match.group(1)) / 1000
    return found


def bytes_under(s3, bucket, prefix):
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += sum(item["Size"] for item in page.get("Contents", []))
    return total


def measure(popularity, work, tracks, threads):
    data = os.path.join(work, f"data-{tracks}")
    generate(popularity, data, tracks)
    endpoint = start_moto(os.path.join(work, "moto-spool"))
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        started = time.monotonic()
        read_bytes = upload(s3, data)
        say(f"uploaded {read_bytes / 1e9:.2f} GB in {time.monotonic() - started:.0f} s")
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1", RUST_LOG="info", NO_COLOR="1")
        command = ["/usr/bin/time", "-v", popularity, "rank", "--data", "s3://data", "--out", "s3://staging",
                   "--time", RUN_TIME]
        if threads:
            command += ["--threads", str(threads)]
        started = time.monotonic()
        finished = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if finished.returncode != 0:
            sys.exit(f"rank failed ({finished.returncode}):\n{finished.stderr[-4000:]}")
        peak, cpu = peak_and_cpu(finished.stderr)
        phases = phase_times(finished.stderr + finished.stdout)
        written = bytes_under(s3, "staging", "reports/") + bytes_under(s3, "staging", "manifests/")
        manifest = json.loads(s3.get_object(Bucket="staging", Key="manifests/20261119030000.json")["Body"].read())
    finally:
        stop_moto(endpoint)
    return {
        "tracks": tracks,
        "input_rows": manifest["inputs"]["catalogueRows"] + manifest["inputs"]["playRows"],
        "wall": wall,
        "cpu": cpu,
        "peak": peak,
        "read": read_bytes,
        "written": written,
        "phases": phases,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--popularity", required=True, help="the release popularity binary")
    parser.add_argument("--work", required=True, help="a directory on the disk for data and moto's spool")
    parser.add_argument("--tracks", type=int, nargs="+", default=[25_000_000, 50_000_000, 100_000_000])
    parser.add_argument("--threads", type=int, default=0, help="rank --threads (default: every core)")
    args = parser.parse_args()
    rows = [measure(args.popularity, args.work, n, args.threads) for n in args.tracks]
    print("| Tracks | Input rows | Wall | CPU | Peak RSS | Read | Written | "
          + " | ".join(p.capitalize() for p in PHASES) + " |")
    print("| ---" * (7 + len(PHASES)) + " |")
    for row in rows:
        phases = []
        previous = 0.0
        for phase in PHASES:
            at = row["phases"].get(phase)
            phases.append("?" if at is None else f"{at - previous:.1f} s")
            previous = at if at is not None else previous
        print(f"| {row['tracks']:,} | {row['input_rows']:,} | {row['wall']:.1f} s | {row['cpu']:.1f} s "
              f"| {row['peak'] / 1e6:,.0f} MB | {row['read'] / 1e9:.2f} GB | {row['written'] / 1e9:.2f} GB | "
              + " | ".join(phases) + " |")


if __name__ == "__main__":
    main()
