-- track_scores: the one scan of a run (docs/scaling.md, "One scan, then the
-- reports"). One row per catalogue track, played or not, and one per
-- played trackId the catalogue does not hold:
--   trackId, masterArtistId, productId  the catalogue's row (NULL for an
--                                       unknown track)
--   score               the track's exact score S of docs/design.md,
--                       "Scores and ranks" (DECIMAL(38,0); 0 when unplayed)
--   play_rows           rows of plays/ inside the window for the trackId
--   plays               the sum of their plays
--   negative_play_rows  rows among them with negative plays (bad input)
--   in_catalogue        whether the catalogue holds the track
-- The three reports (track_popularity.sql, artist_popularity.sql,
-- product_popularity.sql) rank these rows, and run_inputs.sql counts them for
-- the run manifest, without reading catalogue/ or plays/ again.
--
-- Written for Athena (Trino SQL, engine version 3) over the Glue tables of the
-- template (catalogue, plays). A scheduled run writes the result with UNLOAD
-- as Parquet into staging's athena-results/<runId>/<attempt>/track_scores/,
-- which the table run_scores (partitions run_id and attempt, by projection)
-- reads. The project's tests run the same text in DuckDB and compare every
-- row with `popularity rank` (sql/test_sql_matches_rust.py). Keep it in the
-- SQL both engines accept: docs/scaling.md lists where they differ.
--
-- The run's parameters are the three values of `run` below; a runner replaces
-- each (shared/src/athena/sql.rs, and the test, with the patterns
-- docs/scaling.md shows). Nothing else in the text depends on the run.
WITH
run AS (
    SELECT
        TIMESTAMP '2026-11-19 03:00:00' AS run_time,   -- T, UTC: the schedule event's time
        28 AS lookback_days,                           -- LOOKBACK_DAYS (1-366)
        CAST(7 AS DOUBLE) AS half_life_days            -- HALF_LIFE_DAYS (> 0)
),
-- 0..999: candidate day offsets before T's own day (LOOKBACK_DAYS <= 366).
offsets AS (
    SELECT h.n * 100 + t.n * 10 + u.n AS k
    FROM (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS h (n)
    CROSS JOIN (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS t (n)
    CROSS JOIN (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS u (n)
),
-- The window: days d with T - LOOKBACK_DAYS days <= start of d < T, each with
-- its age in whole milliseconds (as the Rust code measures it).
window_days AS (
    SELECT
        CAST(CAST(day_start AS DATE) AS VARCHAR) AS day_text,
        age_ms,
        half_life_days
    FROM (
        SELECT
            day_start,
            date_diff('millisecond', day_start, run.run_time) AS age_ms,
            CAST(run.lookback_days AS BIGINT) * CAST(86400000 AS BIGINT) AS lookback_ms,
            run.half_life_days
        FROM (
            SELECT CAST(CAST(run.run_time AS DATE) AS TIMESTAMP) - INTERVAL '1' DAY * offsets.k AS day_start
            FROM offsets
            CROSS JOIN run
        ) AS candidates
        CROSS JOIN run
    ) AS aged
    WHERE age_ms > 0 AND age_ms <= lookback_ms
),
-- w_d = round(2^(-age_d / H) * 2^32), age_d in days as f64: the same f64
-- operations in the same order as shared/src/scoring.rs.
day_weights AS (
    SELECT
        day_text,
        CAST(round(power(2E0, -((CAST(age_ms AS DOUBLE) / 1E3) / 864E2) / half_life_days) * 4294967296E0) AS BIGINT)
            AS weight
    FROM window_days
),
-- S = sum over the window of plays_d * w_d, exact (DECIMAL(38,0)), with the
-- counts the run manifest reports.
played AS (
    SELECT
        p.trackId AS trackId,
        sum(CAST(p.plays AS DECIMAL(19, 0)) * CAST(w.weight AS DECIMAL(19, 0))) AS score,
        count(*) AS play_rows,
        CAST(sum(p.plays) AS BIGINT) AS plays,
        count_if(p.plays < 0) AS negative_play_rows
    FROM plays AS p
    JOIN day_weights AS w ON p."date" = w.day_text
    GROUP BY p.trackId
)
-- Every catalogue track with its S (0 when it was not played), and the
-- played tracks the catalogue does not hold, which the reports leave out.
SELECT
    coalesce(c.trackId, s.trackId) AS trackId,
    c.masterArtistId AS masterArtistId,
    c.productId AS productId,
    coalesce(CAST(s.score AS DECIMAL(38, 0)), CAST(0 AS DECIMAL(38, 0))) AS score,
    coalesce(s.play_rows, 0) AS play_rows,
    coalesce(s.plays, 0) AS plays,
    coalesce(s.negative_play_rows, 0) AS negative_play_rows,
    c.trackId IS NOT NULL AS in_catalogue
FROM catalogue AS c
FULL OUTER JOIN played AS s ON s.trackId = c.trackId
