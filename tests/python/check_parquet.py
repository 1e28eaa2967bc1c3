"""Reads delivered Parquet report files with DuckDB and with Polars, each
file on its own, and checks them against what staging holds: the column
names and types of docs/design.md, "Reports and layouts" (the id and
searchRank as 64-bit integers, searchModifier as a double, nothing
nullable where the engine says), the rows in order and equal value for
value, the column compression, and the row-group sizes when given.

    .venv/bin/python tests/python/check_parquet.py SPEC.json

SPEC.json is written by the Rust integration tests
(tests/src/parquet_readers.rs):

    {"files": [{"path": "/tmp/.../part-001.parquet", "idField": "trackId",
                "columns": "ranked" | "id-only", "compression": "zstd",
                "rowGroups": [1000, 1000, 500] (optional),
                "rows": [[id, rank, modifier], ...] or [[id], ...]}]}

Prints one JSON line (files, rows, engine versions) and exits 0 when every
file matches; otherwise prints each difference and exits 1.
"""

import json
import sys

import duckdb
import polars as pl


def expected_columns(spec):
    if spec["columns"] == "ranked":
        return [spec["idField"], "searchRank", "searchModifier"]
    return [spec["idField"]]


def check_duckdb(spec, problems):
    path = spec["path"]
    connection = duckdb.connect()
    described = connection.execute("DESCRIBE SELECT * FROM read_parquet(?)", [path]).fetchall()
    names = [row[0] for row in described]
    types = [row[1] for row in described]
    want_types = ["BIGINT", "BIGINT", "DOUBLE"][: len(expected_columns(spec))]
    if names != expected_columns(spec) or types != want_types:
        problems.append(f"duckdb {path}: columns {list(zip(names, types))}, expected "
                        f"{list(zip(expected_columns(spec), want_types))}")
    rows = [list(row) for row in connection.execute("SELECT * FROM read_parquet(?)", [path]).fetchall()]
    compare_rows("duckdb", path, rows, spec["rows"], problems)
    chunks = connection.execute(
        "SELECT row_group_id, any_value(row_group_num_rows), list(DISTINCT compression) "
        "FROM parquet_metadata(?) GROUP BY row_group_id ORDER BY row_group_id",
        [path],
    ).fetchall()
    codecs = sorted({codec.lower() for chunk in chunks for codec in chunk[2]})
    if chunks and codecs != [spec["compression"]]:
        problems.append(f"duckdb {path}: column compression {codecs}, expected {spec['compression']}")
    if "rowGroups" in spec and [chunk[1] for chunk in chunks] != spec["rowGroups"]:
        problems.append(f"duckdb {path}: row groups {[c[1] for c in chunks]}, expected {spec['rowGroups']}")


def check_polars(spec, problems):
    path = spec["path"]
    frame = pl.read_parquet(path)
    want = {name: dtype for name, dtype in zip(expected_columns(spec), [pl.Int64, pl.Int64, pl.Float64])}
    schema = dict(frame.schema)
    if list(schema) != list(want) or any(schema[name] != want[name] for name in want):
        problems.append(f"polars {path}: schema {schema}, expected {want}")
    if frame.null_count().sum_horizontal().item() != 0:
        problems.append(f"polars {path}: nulls in a report file")
    compare_rows("polars", path, [list(row) for row in frame.rows()], spec["rows"], problems)


def compare_rows(engine, path, rows, expected, problems):
    if len(rows) != len(expected):
        problems.append(f"{engine} {path}: {len(rows)} rows, staging has {len(expected)}")
        return
    for number, (row, want) in enumerate(zip(rows, expected), start=1):
        same_types = all(isinstance(v, int) for v in row[:2]) and (len(row) < 3 or isinstance(row[2], float))
        if row != want or not same_types:
            problems.append(f"{engine} {path}: row {number} is {row!r}, staging has {want!r}")
            return


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as spec_file:
        files = json.load(spec_file)["files"]
    problems = []
    for spec in files:
        check_duckdb(spec, problems)
        check_polars(spec, problems)
    for problem in problems:
        print(problem, file=sys.stderr)
    rows = sum(len(spec["rows"]) for spec in files)
    print(json.dumps({"files": len(files), "rows": rows, "duckdb": duckdb.__version__, "polars": pl.__version__}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
