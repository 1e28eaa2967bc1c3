"""Rewrites a generated catalogue (`popularity generate`'s catalogue/part-*.parquet)
as ONE Parquet object, the shape Spark's `coalesce(1)` or a single-file Athena
UNLOAD produces: issue 14 §1, docs/benchmarks.md "A single-object catalogue".

    .venv/bin/python -m pip install pyarrow        # once; not a project dependency
    .venv/bin/python scripts/bench/one_object_catalogue.py DATA_DIR OUT_FILE [--titles N]

Row groups are pyarrow's (1,048,576 rows; with --titles the parts are
written one after another, so each part ends with a shorter row group),
Snappy, the writer's default encodings. --titles N adds N string columns
(`title`, `title2`, ...; ~19 MB a row group each, "Track title <18-19
digits>") between trackId and masterArtistId, as a real catalogue export
carries columns rank does not read: at 100M tracks the object is 578 MB
without, 2.40 GB with one, 4.20 GB with two.
"""

import argparse
import glob
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 1_048_576


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="directory holding catalogue/part-*.parquet")
    parser.add_argument("out_file", help="the one Parquet object to write")
    parser.add_argument("--titles", type=int, default=0, help="string columns rank does not read to add")
    args = parser.parse_args()

    started = time.time()
    parts = sorted(glob.glob(f"{args.data_dir}/catalogue/part-*.parquet"))
    if not parts:
        raise SystemExit(f"no catalogue/part-*.parquet under {args.data_dir}")
    if args.titles > 0:
        writer = None
        for part in parts:
            table = pq.read_table(part)
            for n in range(args.titles, 0, -1):
                # Deterministic digits that Snappy cannot shrink much.
                factor = pa.scalar(6364136223846793005 + 2 * (n - 1), pa.int64())
                noise = pc.abs(pc.multiply(table.column("trackId"), factor))
                title = pc.binary_join_element_wise(pa.scalar("Track title "), pc.cast(noise, pa.string()), "")
                table = table.add_column(1, "title" if n == 1 else f"title{n}", title)
            if writer is None:
                writer = pq.ParquetWriter(args.out_file, table.schema, compression="snappy")
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        writer.close()
    else:
        table = pa.concat_tables(pq.read_table(part) for part in parts)
        pq.write_table(table, args.out_file, compression="snappy", row_group_size=ROW_GROUP_ROWS)
    metadata = pq.ParquetFile(args.out_file).metadata
    print(
        f"{len(parts)} part(s) -> {args.out_file}: {metadata.num_rows} rows, "
        f"{metadata.num_row_groups} row groups, {time.time() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
