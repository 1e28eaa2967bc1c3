"""The Athena SQL of sql/ against the Rust ranking, row for row, in DuckDB.

DuckDB stands in for Athena (Trino): the .sql files are run as they are,
with only the run's parameters filled in (`with_parameters`, `with_run_key`:
the same substitutions the plan step makes for Athena, shared/src/athena/
sql.rs): first track_scores.sql, the one scan of catalogue and plays, whose
rows become the table run_scores (on Athena: UNLOAD into the run's folder,
read through the Glue table of that name); then each report's file and
run_inputs.sql, which read run_scores only. Every row of every report --
id, searchRank, searchModifier -- must equal what `popularity rank` wrote for
the same Parquet inputs, and run_inputs' counts what its run manifest says,
or the test fails naming the first rows that differ.

Cases:
- the project's generator (20,000 tracks x 10 days; unplayed tracks and
  tracks with equal plays give many ties), a window shorter than the data;
- raw play events made here (ties on purpose, unknown and unplayed tracks,
  misfiled and id-less events, a run at midnight, a fractional half-life),
  aggregated into plays/date=... by daily_plays.sql, checked against a count
  made here, then ranked by both; the aggregated days and the catalogue are
  written as Athena's UNLOAD writes them (lower-case column names, objects
  named after the query id without an extension), so `rank` is shown to read
  Athena's output;
- the same catalogue with no plays in the window (every modifier 0).
And the comparison itself is shown to catch one changed tie-break.

Run by scripts/test.sh after `cargo test` built the CLI. Needs the `duckdb`
package in the project's .venv and the debug `popularity` binary:
POPULARITY_BIN, or $CARGO_TARGET_DIR/debug/popularity, or target/debug/popularity.
"""

import collections
import csv
import datetime
import glob
import json
import math
import os
import random
import re
import subprocess
import tempfile
import unittest
import uuid

import duckdb

SQL_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(SQL_DIR)
REPORTS = {
    "track_popularity": "trackId",
    "artist_popularity": "masterArtistId",
    "product_popularity": "productId",
}


def popularity_binary():
    binary = os.environ.get("POPULARITY_BIN")
    if not binary:
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
        binary = os.path.join(target, "debug", "popularity")
    if not os.access(binary, os.X_OK):
        raise AssertionError(
            f"{binary} is missing: build it first (cargo build -p popularity-cli), or set POPULARITY_BIN"
        )
    return binary


def read_sql(name):
    with open(os.path.join(SQL_DIR, name), encoding="utf-8") as f:
        return f.read()


def substitute_once(text, pattern, replacement):
    """Replaces the one match of `pattern`; anything else is a broken file."""
    result, count = re.subn(pattern, lambda _: replacement, text)
    if count != 1:
        raise AssertionError(f"expected exactly one match of {pattern!r} in the SQL, found {count}")
    return result


def with_parameters(sql, run_time, lookback_days, half_life_days):
    """The run's parameters in track_scores.sql (its `run` CTE)."""
    sql = substitute_once(
        sql,
        r"TIMESTAMP '[^']*' AS run_time",
        f"TIMESTAMP '{run_time:%Y-%m-%d %H:%M:%S}' AS run_time",
    )
    sql = substitute_once(sql, r"\b\d+ AS lookback_days", f"{int(lookback_days)} AS lookback_days")
    return substitute_once(
        sql,
        r"CAST\([0-9.]+ AS DOUBLE\) AS half_life_days",
        f"CAST({float(half_life_days)!r} AS DOUBLE) AS half_life_days",
    )


def with_run_key(sql, run_id, attempt):
    """The run's partition of run_scores in a report file or run_inputs.sql."""
    return substitute_once(
        sql,
        r"run_id = '[^']*' AND attempt = '[^']*'",
        f"run_id = '{run_id}' AND attempt = '{attempt}'",
    )


def with_day(sql, day):
    """The day of daily_plays.sql."""
    return substitute_once(sql, r"e\.\"date\" = '\d{4}-\d{2}-\d{2}'", f"e.\"date\" = '{day.isoformat()}'")


def data_files(pattern):
    """The data objects rank reads (shared/src/input.rs): `*.parquet` or names
    without an extension (Athena's), not hidden or marker files."""
    def is_data(path):
        name = os.path.basename(path)
        return not name.startswith(("_", ".")) and (name.endswith(".parquet") or "." not in name)
    return sorted(path for path in glob.glob(pattern) if os.path.isfile(path) and is_data(path))


def open_inputs(data_dir):
    """A DuckDB session whose `catalogue` and `plays` are the Parquet under
    data_dir, shaped like the Glue tables of the template (date as STRING)."""
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    catalogue = data_files(os.path.join(data_dir, "catalogue", "*"))
    plays = data_files(os.path.join(data_dir, "plays", "*", "*"))
    db.execute(f"CREATE VIEW catalogue AS SELECT * FROM read_parquet({catalogue!r})")
    if plays:
        db.execute(
            f"CREATE VIEW plays AS SELECT * FROM read_parquet({plays!r}, "
            "hive_partitioning = true, hive_types = {'date': VARCHAR})"
        )
    else:
        db.execute('CREATE VIEW plays AS SELECT CAST(NULL AS BIGINT) AS trackId, '
                   'CAST(NULL AS BIGINT) AS plays, CAST(NULL AS VARCHAR) AS "date" WHERE false')
    return db


def run_quietly(command, env=None):
    """Runs the CLI; its progress and log lines are shown only if it fails."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}{done.stdout}")


def rank_with_rust(data_dir, out_dir, run_time, lookback_days, half_life_days):
    """`popularity rank` as TSV in parts of 7,000 rows; rows per report, and
    the run manifest."""
    binary = popularity_binary()
    env = dict(os.environ, PART_ROWS="7000", LOOKBACK_DAYS=str(lookback_days), HALF_LIFE_DAYS=str(half_life_days))
    run_quietly(
        [binary, "rank", "--data", data_dir, "--out", out_dir, "--time", f"{run_time:%Y-%m-%dT%H:%M:%SZ}",
         "--format", "tsv"],
        env,
    )
    run_id = f"{run_time:%Y%m%d%H%M%S}"
    reports = {}
    for data_type, id_field in REPORTS.items():
        parts = sorted(glob.glob(os.path.join(out_dir, "reports", data_type, run_id, "part-*.tsv")))
        if not parts:
            raise AssertionError(f"popularity rank wrote no {data_type} parts under {out_dir}")
        rows = []
        for part in parts:
            with open(part, newline="", encoding="utf-8") as f:
                reader = csv.reader(f, delimiter="\t")
                header = next(reader)
                if header != [id_field, "searchRank", "searchModifier"]:
                    raise AssertionError(f"{part}: unexpected header {header}")
                rows.extend((int(i), int(r), float(m)) for i, r, m in reader)
        reports[data_type] = rows
    with open(os.path.join(out_dir, "manifests", f"{run_id}.json"), encoding="utf-8") as f:
        reports["manifest"] = json.load(f)
    return reports


RUN_KEY = ("20261119030000", "test")


def score_tracks(db, run_time, lookback_days, half_life_days):
    """track_scores.sql with the run's parameters, its rows kept as the table
    run_scores of one run (the partition columns the Glue table adds)."""
    sql = with_parameters(read_sql("track_scores.sql"), run_time, lookback_days, half_life_days)
    db.execute(f"CREATE OR REPLACE TABLE track_scores_rows AS {sql}")
    run_id, attempt = RUN_KEY
    db.execute(f"CREATE OR REPLACE VIEW run_scores AS SELECT *, '{run_id}' AS run_id, '{attempt}' AS attempt "
               "FROM track_scores_rows")


def run_inputs(db):
    """run_inputs.sql's one row, as a dict."""
    cursor = db.execute(with_run_key(read_sql("run_inputs.sql"), *RUN_KEY))
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchone()))


def rank_with_sql(db, run_time, lookback_days, half_life_days, edit=None, scores=None):
    """Every report's rows (id, searchRank, searchModifier); with `scores`
    (a dict), also each report's exact scores by id, into it. `edit`, if
    given, changes each report file's text before it runs."""
    score_tracks(db, run_time, lookback_days, half_life_days)
    reports = {}
    for data_type in REPORTS:
        sql = with_run_key(read_sql(f"{data_type}.sql"), *RUN_KEY)
        if edit:
            sql = edit(sql)
        if scores is None:
            reports[data_type] = [(int(i), int(r), float(m)) for i, r, m in db.execute(sql).fetchall()]
        else:
            rows = db.execute(with_score_column(sql)).fetchall()
            reports[data_type] = [(int(i), int(r), float(m)) for i, r, m, _ in rows]
            scores[data_type] = {int(i): int(score) for i, _, _, score in rows}
    return reports


def with_score_column(sql):
    """The report query with its exact score as a fourth column (test only)."""
    return substitute_once(
        sql, r"END AS searchModifier\nFROM ranked", "END AS searchModifier, CAST(score AS VARCHAR) AS score\nFROM ranked"
    )


def exact_scores(db, run_time, lookback_days, half_life_days):
    """The scores of docs/design.md, "Scores and ranks", computed here with Python integers, from the same
    inputs: {data_type: {id: S}}. The reports hold no scores, and a weight
    off by one unit rarely moves a rank, so the scores are checked apart."""
    weights = {}
    for back in range(lookback_days + 2):
        day = run_time.date() - datetime.timedelta(days=back)
        age_ms = (run_time - datetime.datetime.combine(day, datetime.time())) // datetime.timedelta(milliseconds=1)
        if 0 < age_ms <= lookback_days * 86_400_000:
            weight = math.pow(2.0, -(age_ms / 1000.0 / 86400.0) / half_life_days) * 4294967296.0
            weights[day.isoformat()] = int(math.floor(weight + 0.5))  # f64 round(): half away from zero
    tracks = {t: 0 for t, _, _ in db.execute("SELECT trackId, masterArtistId, productId FROM catalogue").fetchall()}
    for track, plays, day in db.execute('SELECT trackId, plays, "date" FROM plays').fetchall():
        if day in weights and track in tracks:
            tracks[track] += plays * weights[day]
    artists, products = collections.Counter(), collections.Counter()
    for track, artist, product in db.execute("SELECT trackId, masterArtistId, productId FROM catalogue").fetchall():
        artists[artist] += tracks[track]
        products[product] += tracks[track]
    return {"track_popularity": tracks, "artist_popularity": dict(artists), "product_popularity": dict(products)}


def differences(expected, actual):
    """Every difference between two reports, as lines; empty when equal."""
    problems = []
    if len(expected) != len(actual):
        problems.append(f"{len(expected)} rows from Rust, {len(actual)} from SQL")
    for index, (rust, sql) in enumerate(zip(expected, actual)):
        if rust != sql:
            problems.append(f"row {index + 1}: Rust {rust}, SQL {sql}")
    return problems


class SqlMatchesRust(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The generator's data, made once for the tests that use it.
        cls.shared = tempfile.TemporaryDirectory(prefix="sql-vs-rust-generated-")
        cls.generated = os.path.join(cls.shared.name, "generated")
        run_quietly(
            [popularity_binary(), "generate", "--tracks", "20000", "--days", "10", "--end-date", "2026-11-18",
             "--seed", "14", "--out", cls.generated],
        )

    @classmethod
    def tearDownClass(cls):
        cls.shared.cleanup()

    def setUp(self):
        self.scratch = tempfile.TemporaryDirectory(prefix="sql-vs-rust-")
        self.dir = self.scratch.name

    def tearDown(self):
        self.scratch.cleanup()

    def assert_same_reports(self, rust, sql):
        self.assertEqual(sorted(sql), sorted(REPORTS))
        for data_type in REPORTS:
            problems = differences(rust[data_type], sql[data_type])
            if problems:
                self.fail(f"{data_type}: {len(problems)} differences, first: " + "; ".join(problems[:5]))
            self.assertTrue(rust[data_type], f"{data_type} is empty")

    def load_table(self, db, name, columns, rows):
        """A DuckDB table of `rows` (None = NULL), through a CSV file: far
        faster than inserting row by row."""
        path = os.path.join(self.dir, f"{name}.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(["" if v is None else v for v in row] for row in rows)
        spec = ", ".join(f"'{column}': '{kind}'" for column, kind in columns.items())
        db.execute(f"CREATE TABLE {name} AS SELECT * FROM read_csv('{path}', header = true, columns = {{{spec}}})")
        return name

    def rank_both(self, data_dir, run_time, lookback_days, half_life_days):
        """Both rankings of the same inputs; also checks the SQL's exact scores."""
        out = os.path.join(self.dir, f"staging-{run_time:%Y%m%d%H%M%S}")
        rust = rank_with_rust(data_dir, out, run_time, lookback_days, half_life_days)
        db = open_inputs(data_dir)
        scores = {}
        sql = rank_with_sql(db, run_time, lookback_days, half_life_days, scores=scores)
        expected = exact_scores(db, run_time, lookback_days, half_life_days)
        for data_type in REPORTS:
            wrong = [(i, s, scores[data_type].get(i)) for i, s in expected[data_type].items() if scores[data_type].get(i) != s]
            if wrong or len(scores[data_type]) != len(expected[data_type]):
                self.fail(f"{data_type}: {len(wrong)} exact scores differ (id, expected, SQL), first: {wrong[:3]}")
        self.assert_inputs_match_the_manifest(run_inputs(db), rust)
        return rust, sql

    def assert_inputs_match_the_manifest(self, inputs, rust):
        """run_inputs.sql counts what `popularity rank`'s manifest says it read."""
        manifest = rust["manifest"]["inputs"]
        for column, field in [("catalogue_rows", "catalogueRows"), ("play_rows", "playRows"),
                              ("unknown_track_play_rows", "unknownTrackPlayRows"),
                              ("unknown_track_plays", "unknownTrackPlays")]:
            self.assertEqual(inputs[column], manifest[field], f"run_inputs.{column} against the manifest's {field}")
        self.assertEqual(inputs["catalogue_tracks"], inputs["catalogue_rows"], "no duplicate trackId")
        self.assertEqual(inputs["artists"], len(rust["artist_popularity"]))
        self.assertEqual(inputs["products"], len(rust["product_popularity"]))
        self.assertEqual(inputs["negative_play_rows"], 0)

    def test_generated_catalogue_ranks_identically_in_every_row(self):
        data = self.generated
        # A 7-day window over 10 days of plays, at the schedule's 03:00.
        rust, sql = self.rank_both(data, datetime.datetime(2026, 11, 19, 3, 0, 0), 7, 7.0)
        self.assert_same_reports(rust, sql)
        track = rust["track_popularity"]
        self.assertEqual(len(track), 20000)
        modifiers = [m for _, _, m in track]
        self.assertEqual(modifiers[0], 1.0)
        self.assertGreater(len(modifiers) - len(set(modifiers)), 10000, "expected many equal modifiers (ties)")

    def test_the_comparison_fails_when_the_sql_breaks_a_tie_the_other_way(self):
        data = self.generated
        run_time = datetime.datetime(2026, 11, 19, 3, 0, 0)
        rust = rank_with_rust(data, os.path.join(self.dir, "staging"), run_time, 7, 7.0)
        flipped = rank_with_sql(
            open_inputs(data), run_time, 7, 7.0,
            edit=lambda sql: sql.replace("ORDER BY score DESC, id ASC", "ORDER BY score DESC, id DESC"),
        )
        # Thousands of unplayed tracks tie at 0; artists and products here
        # may have no equal scores at all, so only the track report must differ.
        problems = differences(rust["track_popularity"], flipped["track_popularity"])
        self.assertGreater(len(problems), 1000, "a changed tie-break went unseen")
        self.assertEqual(differences(rust["track_popularity"][:10], flipped["track_popularity"][:10]), [],
                         "the top tracks have distinct scores and must not move")

    def test_raw_events_aggregate_to_daily_plays_and_rank_identically_with_ties(self):
        data = os.path.join(self.dir, "events-data")
        events_dir = os.path.join(self.dir, "play-events")
        rng = random.Random(2026)
        # 3,000 tracks with scattered 62-bit ids; few artists and products, so
        # groups are big; ids chosen so that some groups have no plays at all.
        track_ids = sorted(rng.sample(range(1, 2**62), 3000))
        catalogue = [(t, 9_000 + rng.randrange(150), 5_000 + rng.randrange(600)) for t in track_ids]
        unknown = [2**62 + n for n in range(5)]
        days = [datetime.date(2026, 11, 10) + datetime.timedelta(days=n) for n in range(11)]  # 11-10 .. 11-20
        events, expected = [], collections.Counter()
        for day in days:
            for track in rng.sample(track_ids, 600) + unknown:
                for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):  # small counts: many equal scores
                    moment = datetime.datetime.combine(day, datetime.time()) + datetime.timedelta(
                        seconds=rng.randrange(86400))
                    events.append((track, moment, day.isoformat()))
                    expected[(day.isoformat(), track)] += 1
            # Not counted: an event without a track, and one filed under the wrong day.
            events.append((None, datetime.datetime.combine(day, datetime.time(12)), day.isoformat()))
            events.append((track_ids[0], datetime.datetime.combine(day, datetime.time(12)) + datetime.timedelta(days=1),
                           day.isoformat()))

        db = duckdb.connect()
        db.execute("SET TimeZone = 'UTC'")
        raw = self.load_table(db, "raw", {"trackId": "BIGINT", "playedAt": "TIMESTAMP", "date": "VARCHAR"}, events)
        db.execute(f"COPY {raw} TO '{events_dir}' (FORMAT parquet, PARTITION_BY (\"date\"))")
        cat = self.load_table(db, "cat", {"trackId": "BIGINT", "masterArtistId": "BIGINT", "productId": "BIGINT"},
                              catalogue)
        os.makedirs(os.path.join(data, "catalogue"))
        db.execute(f"COPY (SELECT trackId AS trackid, masterArtistId AS masterartistid, productId AS productid FROM {cat}) "
                   f"TO '{os.path.join(data, 'catalogue', '20261119_020000_00007_fghij_' + str(uuid.UUID(int=7)))}' "
                   "(FORMAT parquet)")
        db.execute(
            f"CREATE VIEW play_events AS SELECT * FROM read_parquet('{events_dir}/*/*.parquet', "
            "hive_partitioning = true, hive_types = {'date': VARCHAR})"
        )
        daily_plays = read_sql("daily_plays.sql")
        for day in days:
            rows = db.execute(with_day(daily_plays, day)).fetchall()
            want = sorted((track, n) for (d, track), n in expected.items() if d == day.isoformat())
            self.assertEqual(rows, want, f"daily plays of {day}")
            # Written as Athena's UNLOAD writes it: lower-case column names,
            # an object named after the query id, without an extension.
            folder = os.path.join(data, "plays", f"date={day.isoformat()}")
            os.makedirs(folder)
            athena_name = f"{day:%Y%m%d}_030000_00012_abcde_{uuid.UUID(int=rng.getrandbits(128))}"
            db.execute(f"COPY (SELECT trackId AS trackid, plays FROM ({with_day(daily_plays, day)})) "
                       f"TO '{folder}/{athena_name}' (FORMAT parquet)")
            self.assertEqual(db.execute(f"SELECT name FROM parquet_schema('{folder}/{athena_name}')").fetchall()[1:],
                             [("trackid",), ("plays",)])

        # At midnight: the window is 11-14 .. 11-18 (11-19 starts at T and is
        # out; 11-14 starts exactly at T - 5 days and is in), H = 3.5 days.
        rust, sql = self.rank_both(data, datetime.datetime(2026, 11, 19, 0, 0, 0), 5, 3.5)
        self.assert_same_reports(rust, sql)
        for data_type in REPORTS:
            scores = [m for _, _, m in rust[data_type]]
            self.assertGreater(len(scores) - len(set(scores)), 100, f"{data_type}: expected ties")
        self.assertEqual(len(rust["track_popularity"]), 3000)

        # No plays in the window (it ends before the first event; rank refuses
        # times more than a day ahead of now): every score 0, every modifier 0, ranks by id.
        rust, sql = self.rank_both(data, datetime.datetime(2026, 10, 1, 3, 0, 0), 28, 7.0)
        self.assert_same_reports(rust, sql)
        self.assertEqual([i for i, _, _ in rust["track_popularity"]], track_ids)
        self.assertTrue(all(m == 0.0 for _, _, m in rust["track_popularity"]))


class SqlFiles(unittest.TestCase):
    """The files themselves, without running anything."""

    def test_the_reports_rank_the_run_scores_alike_and_differ_only_in_their_id(self):
        # The artist and product files are one text with the id field
        # swapped; the track file ranks tracks as they are (a duplicate
        # trackId stays two items, which run_inputs counts), without GROUP BY.
        code = {name: "\n".join(line for line in read_sql(f"{name}.sql").splitlines() if not line.startswith("--"))
                for name in REPORTS}
        self.assertEqual(code["artist_popularity"].replace("masterArtistId", "productId"), code["product_popularity"])
        artist_as_track = (code["artist_popularity"].replace("masterArtistId", "trackId")
                           .replace("sum(score) AS score", "score").replace("\n    GROUP BY trackId", ""))
        self.assertEqual(artist_as_track, code["track_popularity"])
        for name in list(REPORTS) + ["run_inputs"]:
            text = read_sql(f"{name}.sql")
            self.assertIn("FROM run_scores\n", text, name)
            self.assertNotIn("FROM catalogue", text, name)
            self.assertNotIn("FROM plays", text, name)

    def test_parameters_are_replaced_once_each_and_a_missing_one_is_an_error(self):
        sql = with_parameters(read_sql("track_scores.sql"), datetime.datetime(2027, 1, 2, 3, 4, 5), 366, 3.5)
        self.assertIn("TIMESTAMP '2027-01-02 03:04:05' AS run_time", sql)
        self.assertIn("366 AS lookback_days", sql)
        self.assertIn("CAST(3.5 AS DOUBLE) AS half_life_days", sql)
        self.assertIn("e.\"date\" = '2027-01-02'", with_day(read_sql("daily_plays.sql"), datetime.date(2027, 1, 2)))
        for name in list(REPORTS) + ["run_inputs"]:
            keyed = with_run_key(read_sql(f"{name}.sql"), "20270102030405", "exec-1")
            self.assertIn("run_id = '20270102030405' AND attempt = 'exec-1'", keyed, name)
        with self.assertRaises(AssertionError):
            with_parameters("SELECT 1", datetime.datetime(2027, 1, 2), 28, 7.0)


if __name__ == "__main__":
    unittest.main()
