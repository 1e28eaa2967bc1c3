"""What each query of a run would scan on Athena (docs/scaling.md, "One scan,
then the reports"), measured on Parquet: Athena bills the compressed bytes
of the columns a query reads (partition pruning and column projection
applied), so the figures are the compressed sizes of those column chunks.

  athena_bytes_scanned.py DATA_DIR RUN_TIME [LOOKBACK_DAYS]

DATA_DIR holds catalogue/ and plays/date=YYYY-MM-DD/ (as `popularity
generate` writes them). The script runs sql/track_scores.sql in DuckDB with
the run's parameters, writes its rows as Snappy Parquet (what the UNLOAD of
the scan writes; DuckDB's writer stands in for Athena's), and prints, per
query of the two layouts, the bytes of the columns it reads:
- one scan, then the reports (what the state machine runs): track_scores
  reads catalogue (3 columns) and the window's plays (2 columns); each report
  and run_inputs read only their columns of the scan's rows;
- three queries over the old view (each report recomputes the ranking from
  catalogue and plays).
"""
import datetime
import glob
import os
import re
import sys
import tempfile

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def column_bytes(db, files):
    """Compressed bytes of each top-level column over `files`."""
    if not files:
        return {}
    rows = db.execute(
        "SELECT lower(path_in_schema), sum(total_compressed_size) FROM parquet_metadata(?) GROUP BY 1", [files]
    ).fetchall()
    return {name: int(size) for name, size in rows}


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(__doc__)
    data, run_time = argv[1], datetime.datetime.fromisoformat(argv[2].replace("Z", "+00:00")).replace(tzinfo=None)
    lookback = int(argv[3]) if len(argv) == 4 else 28
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    catalogue = sorted(glob.glob(os.path.join(data, "catalogue", "*")))
    days = [(run_time.date() - datetime.timedelta(days=n)).isoformat() for n in range(0, lookback + 1)]
    plays = sorted(f for day in days for f in glob.glob(os.path.join(data, "plays", f"date={day}", "*")))
    db.execute(f"CREATE VIEW catalogue AS SELECT * FROM read_parquet({catalogue!r})")
    db.execute(f"CREATE VIEW plays AS SELECT * FROM read_parquet({plays!r}, hive_partitioning = true, "
               "hive_types = {'date': VARCHAR})")
    sql = open(os.path.join(ROOT, "sql", "track_scores.sql")).read()
    sql = re.sub(r"TIMESTAMP '[^']*' AS run_time", f"TIMESTAMP '{run_time:%Y-%m-%d %H:%M:%S}' AS run_time", sql)
    sql = re.sub(r"\b\d+ AS lookback_days", f"{lookback} AS lookback_days", sql)
    with tempfile.TemporaryDirectory(prefix="bytes-scanned-") as out:
        started = datetime.datetime.now()
        db.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet, COMPRESSION snappy, PER_THREAD_OUTPUT true)")
        seconds = (datetime.datetime.now() - started).total_seconds()
        scores = column_bytes(db, sorted(glob.glob(os.path.join(out, "*"))))
        rows = db.execute(f"SELECT count(*) FROM read_parquet('{out}/*')").fetchone()[0]
    cat, pl = column_bytes(db, catalogue), column_bytes(db, plays)
    mb = lambda n: f"{n / 1e6:,.1f} MB"
    scan = cat["trackid"] + cat["masterartistid"] + cat["productid"] + pl["trackid"] + pl["plays"]
    reports = {
        "track_popularity": scores["trackid"] + scores["score"] + scores["in_catalogue"],
        "artist_popularity": scores["masterartistid"] + scores["score"] + scores["in_catalogue"],
        "product_popularity": scores["productid"] + scores["score"] + scores["in_catalogue"],
        "run_inputs": sum(scores.values()) - scores["score"],
    }
    print(f"inputs: {len(catalogue)} catalogue files, {len(plays)} plays files of the window ({lookback} days)")
    print(f"  catalogue columns: " + ", ".join(f"{k} {mb(v)}" for k, v in sorted(cat.items())))
    print(f"  plays columns:     " + ", ".join(f"{k} {mb(v)}" for k, v in sorted(pl.items())))
    print(f"track_scores rows: {rows:,} written in {seconds:.1f} s as Snappy Parquet; columns: "
          + ", ".join(f"{k} {mb(v)}" for k, v in sorted(scores.items())))
    print("one scan, then the reports:")
    print(f"  track_scores       {mb(scan)}")
    for name, size in reports.items():
        print(f"  {name:<18} {mb(size)}")
    total = scan + sum(reports.values())
    print(f"  total              {mb(total)}")
    old = {
        "track_popularity": cat["trackid"] + pl["trackid"] + pl["plays"],
        "artist_popularity": cat["trackid"] + cat["masterartistid"] + pl["trackid"] + pl["plays"],
        "product_popularity": cat["trackid"] + cat["productid"] + pl["trackid"] + pl["plays"],
    }
    print("three queries over the view:")
    for name, size in old.items():
        print(f"  {name:<18} {mb(size)}")
    print(f"  total              {mb(sum(old.values()))}")


if __name__ == "__main__":
    main(sys.argv)
