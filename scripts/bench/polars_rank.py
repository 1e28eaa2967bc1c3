"""The ranking of docs/design.md ("Scores and ranks") in Polars: the reference
`popularity rank` is measured against (issue 14 §4, docs/benchmarks.md
"Against Polars").

Same inputs as `popularity rank --data DIR` (catalogue/*.parquet and
plays/date=YYYY-MM-DD/*.parquet, as `popularity generate` writes them), same
window and integer day weights, same exact scores, same three reports written
in the same format: `reports/<data_type>/<runId>/part-NNN.json`, a JSON array
with one object per line, at most --part-rows items per part. On the
project's generated data its parts are byte-identical to ours
(scripts/bench/compare_polars.py checks it after measuring). It does not
write the run manifest, does not hash the parts and does not refuse
negative plays (ours does all three).

Scores: S = sum of plays_d * w_d with w_d < 2^32, summed as UInt64 -- exact
as long as every track's plays in the window times the largest day weight
stay below 2^64 and the catalogue's scores total below 2^63 (then no
artist or product sum can wrap either).
Both are checked after scoring; when either fails, the scores are summed
again as Int128, exact for any input this project accepts. The generated
data never needs that (a 10M-track catalogue's top track has < 2^23 plays
in 14 days).

Scoring runs on Polars' streaming engine (--engine), ordering on the
in-memory one; --sort picks one two-key sort per report or an id sort and a
stable score sort (same bytes). Run with POLARS_MAX_THREADS set (the runner
sets 2), e.g.
  POLARS_MAX_THREADS=2 .venv/bin/python scripts/bench/polars_rank.py \
      --data DIR --out OUT --time 2026-11-19T03:00:00Z
"""

import argparse
import datetime
import glob
import math
import os
import sys
import time

import polars as pl

WEIGHT_ONE = 2**32
REPORTS = (
    # (data_type, id column in the catalogue, id field in the report)
    ("track_popularity", "trackId", "trackId"),
    ("artist_popularity", "masterArtistId", "masterArtistId"),
    ("product_popularity", "productId", "productId"),
)


def round_half_away(x):
    """f64::round for a non-negative x (Python's round() goes half to even)."""
    whole = math.floor(x)
    return whole + 1 if x - whole >= 0.5 else whole


def window(run_time, lookback_days, half_life_days):
    """[(day, weight)] oldest first: the days d with T - lookback <= start of d
    < T, w_d = round(2^(-age_d / H) * 2^32), age in whole milliseconds as
    shared/src/scoring.rs measures it."""
    earliest = run_time - datetime.timedelta(days=lookback_days)
    start = lambda d: datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc)
    day = earliest.date()
    if start(day) < earliest:
        day += datetime.timedelta(days=1)
    days = []
    while start(day) < run_time:
        age = run_time - start(day)
        age_ms = (age.days * 86_400 + age.seconds) * 1000 + age.microseconds // 1000
        age_days = age_ms / 1000.0 / 86_400.0
        days.append((day, int(round_half_away(2.0 ** (-age_days / half_life_days) * WEIGHT_ONE))))
        day += datetime.timedelta(days=1)
    return days


def data_files(folder):
    """The `*.parquet` files of a folder, not _ or . names: what `popularity
    generate` writes (rank also reads Athena's extension-less names and
    lower-case columns; this reference does not need to)."""
    return sorted(
        f for f in glob.glob(os.path.join(folder, "*.parquet")) if not os.path.basename(f).startswith(("_", "."))
    )


def modifier_texts():
    """hundredths -> the text serde_json (ryu) prints for hundredths / 100:
    Python's repr is also the shortest round-trip form ("0.0", "0.07", "1.0")."""
    return [repr(h / 100.0) for h in range(101)]


def scored_catalogue(data, days, wide):
    """trackId, masterArtistId, productId, score (and `played`: the track's
    plays in the window) as a lazy frame."""
    catalogue_files = data_files(os.path.join(data, "catalogue"))
    if not catalogue_files:
        sys.exit(f"no catalogue under {data}/catalogue")
    score_type = pl.Int128 if wide else pl.UInt64
    plays = []
    for day, weight in days:
        files = data_files(os.path.join(data, "plays", f"date={day.isoformat()}"))
        if files:
            plays.append(
                pl.scan_parquet(files, hive_partitioning=False).select(
                    "trackId",
                    (pl.col("plays").cast(score_type) * pl.lit(weight, score_type)).alias("points"),
                    pl.col("plays").cast(pl.UInt64).alias("played"),
                )
            )
    catalogue = pl.scan_parquet(catalogue_files, hive_partitioning=False).select(
        "trackId", "masterArtistId", "productId"
    )
    if not plays:
        return catalogue.with_columns(pl.lit(0, score_type).alias("score"), pl.lit(0, pl.UInt64).alias("played"))
    track_scores = (
        pl.concat(plays)
        .group_by("trackId")
        .agg(pl.col("points").sum().alias("score"), pl.col("played").sum())
    )
    # Plays of tracks not in the catalogue drop out here.
    return catalogue.join(track_scores, on="trackId", how="left").with_columns(
        pl.col("score").fill_null(0), pl.col("played").fill_null(0)
    )


def ranked(scored, id_column, sort):
    """A report's items in rank order: id, score (score descending, id
    ascending). `sort`: "stable" sorts by id, then stably by score alone
    (two single-key sorts); "two-keys" sorts once by both."""
    if id_column == "trackId":
        items = scored.select(pl.col(id_column).alias("id"), "score")
    else:
        items = scored.group_by(id_column).agg(pl.col("score").sum()).rename({id_column: "id"})
    if sort == "stable":
        return items.sort("id").sort("score", descending=True, maintain_order=True)
    return items.sort(["score", "id"], descending=[True, False])


def write_report(items, out, data_type, id_field, run_id, part_rows, texts):
    """Writes the report's parts as JSON arrays, one object a line, byte for
    byte what shared/src/report_writer.rs writes. Each part is written by
    Polars' CSV sink with one unquoted string column named "[" (the header
    line is the array's opening) whose last row ends the array."""
    folder = os.path.join(out, "reports", data_type, run_id)
    os.makedirs(folder, exist_ok=True)
    n = items.height
    if n == 0:
        with open(os.path.join(folder, "part-001.json"), "w") as f:
            f.write("[\n]\n")
        return 1
    # ln(1 + S/2^32) / ln(1 + S_max/2^32), the same f64 steps as scoring.rs.
    scale = lambda score: (pl.lit(1.0) + score.cast(pl.Float64) / float(WEIGHT_ONE)).log()
    max_score = items["score"][0]
    if max_score == 0:
        hundredths = pl.lit(0, pl.UInt8)
    else:
        max_scale = items.select(scale(pl.col("score").first())).item()
        hundredths = (scale(pl.col("score")) / max_scale * 100.0).round(0, mode="half_away_from_zero").cast(pl.UInt8)
    rank = pl.col("searchRank")
    line = pl.concat_str(
        pl.lit('{"' + id_field + '":'),
        pl.col("id").cast(pl.String),
        pl.lit(',"searchRank":'),
        rank.cast(pl.String),
        pl.lit(',"searchModifier":'),
        hundredths.replace_strict(list(range(101)), texts, return_dtype=pl.String),
        pl.when((rank % part_rows == 0) | (rank == n)).then(pl.lit("}\n]")).otherwise(pl.lit("},")),
    ).alias("[")
    parts = (n + part_rows - 1) // part_rows
    for part in range(parts):
        path = os.path.join(folder, f"part-{part + 1:03d}.json")
        (
            items.lazy()
            .slice(part * part_rows, part_rows)
            .with_row_index("searchRank", offset=part * part_rows + 1)
            .select(line)
            .sink_csv(path, quote_style="never", include_header=True)
        )
    return parts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with catalogue/ and plays/")
    parser.add_argument("--out", required=True, help="reports/ goes here")
    parser.add_argument("--time", required=True, help="run time T, RFC 3339 (e.g. 2026-11-19T03:00:00Z)")
    parser.add_argument("--lookback-days", type=int, default=int(os.environ.get("LOOKBACK_DAYS", 28)))
    parser.add_argument("--half-life-days", type=float, default=float(os.environ.get("HALF_LIFE_DAYS", 7.0)))
    parser.add_argument("--part-rows", type=int, default=int(os.environ.get("PART_ROWS", 5_000_000)))
    parser.add_argument("--int128", action="store_true", help="sum scores as Int128 from the start")
    parser.add_argument("--sort", choices=["stable", "two-keys"], default="two-keys", help="how reports are ordered")
    parser.add_argument(
        "--engine",
        choices=["streaming", "in-memory"],
        default="streaming",
        help="Polars engine of the scoring (reading, summing, joining): streaming took ~2/3 of the CPU time of in-memory",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    phase = lambda what: print(f"polars_rank: {what} at {time.perf_counter() - started:.2f} s", file=sys.stderr)
    run_time = datetime.datetime.fromisoformat(args.time.replace("Z", "+00:00")).astimezone(datetime.timezone.utc)
    run_id = run_time.strftime("%Y%m%d%H%M%S")
    days = window(run_time, args.lookback_days, args.half_life_days)
    max_weight = max((w for _, w in days), default=0)

    scored = scored_catalogue(args.data, days, wide=args.int128).collect(engine=args.engine)
    played = scored["played"].max() or 0
    total = scored["score"].cast(pl.Float64).sum()
    if not args.int128 and (played * max_weight >= 2**64 or total >= 2.0**63 * 0.999):
        phase("UInt64 could overflow: scoring again as Int128")
        scored = scored_catalogue(args.data, days, wide=True).collect(engine=args.engine)
    scored = scored.drop("played")
    phase(f"scored {scored.height} tracks")

    frame = scored.lazy()
    reports = pl.collect_all([ranked(frame, id_column, args.sort) for _, id_column, _ in REPORTS])
    del scored, frame
    phase("ranked")

    texts = modifier_texts()
    for (data_type, _, id_field), items in zip(REPORTS, reports):
        parts = write_report(items, args.out, data_type, id_field, run_id, args.part_rows, texts)
        phase(f"{data_type}: {items.height} items in {parts} parts written")


if __name__ == "__main__":
    main()
