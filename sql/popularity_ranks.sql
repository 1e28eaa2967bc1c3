-- The view popularity_ranks: the ranking of docs/design.md, "Scores and ranks",
-- computed once for the three reports of docs/design.md, "Reports and layouts".
-- One row per item of each report:
--   report           'track_popularity', 'artist_popularity' or 'product_popularity'
--   id               the item: trackId, masterArtistId or productId
--   score            its exact integer score (DECIMAL(38,0)): a track's S, an
--                    artist's or product's sum of its tracks' S
--   search_rank      by score descending, then id ascending, within the report
--   search_modifier  round(ln(1 + S/2^32) / ln(1 + S_max/2^32) * 100) / 100
-- The report files (track_popularity.sql, artist_popularity.sql,
-- product_popularity.sql) each select one report from it.
--
-- Written for Athena (Trino SQL, engine version 3) over the tables the
-- template's Athena option creates (catalogue, plays); the project's test runs
-- the same text in DuckDB and compares every row with `popularity rank`
-- (sql/test_sql_matches_rust.py). Keep it in the SQL both engines accept:
-- docs/scaling.md lists where they differ and how this text avoids it.
--
-- The run's parameters are the three values of `run` below; a runner replaces
-- them (the test does, with the same regular expressions docs/scaling.md
-- shows), runs this statement, then the three reports. The view is one per
-- database and holds one run's parameters: runs in the same database take
-- turns.
CREATE OR REPLACE VIEW popularity_ranks AS
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
-- S = sum over the window of plays_d * w_d, exact (DECIMAL(38,0)).
played AS (
    SELECT
        p.trackId AS trackId,
        sum(CAST(p.plays AS DECIMAL(19, 0)) * CAST(w.weight AS DECIMAL(19, 0))) AS score
    FROM plays AS p
    JOIN day_weights AS w ON p."date" = w.day_text
    GROUP BY p.trackId
),
-- Every catalogue track with its S, 0 when it was not played; plays of
-- unknown tracks drop out here.
track_scores AS (
    SELECT
        c.trackId AS trackId,
        c.masterArtistId AS masterArtistId,
        c.productId AS productId,
        coalesce(CAST(s.score AS DECIMAL(38, 0)), CAST(0 AS DECIMAL(38, 0))) AS score
    FROM catalogue AS c
    LEFT JOIN played AS s ON s.trackId = c.trackId
),
-- Each report's items: every track, and every artist and product of the
-- catalogue with the exact sum of its tracks' S.
scores AS (
    SELECT 'track_popularity' AS report, trackId AS id, score
    FROM track_scores
    UNION ALL
    SELECT 'artist_popularity' AS report, masterArtistId AS id, sum(score) AS score
    FROM track_scores
    GROUP BY masterArtistId
    UNION ALL
    SELECT 'product_popularity' AS report, productId AS id, sum(score) AS score
    FROM track_scores
    GROUP BY productId
),
-- Ranked within each report. A query for one report (WHERE report = ...)
-- computes that report alone: the filter is on the PARTITION BY column, so
-- the optimizer moves it below the window into the UNION ALL, where only one
-- branch can match (DuckDB's plan shows one branch left; Trino's
-- PredicatePushDown does the same, not seen on Athena: docs/scaling.md).
ranked AS (
    SELECT
        report,
        id,
        score,
        row_number() OVER (PARTITION BY report ORDER BY score DESC, id ASC) AS search_rank,
        max(score) OVER (PARTITION BY report) AS max_score
    FROM scores
)
SELECT
    report,
    id,
    score,
    search_rank,
    CASE
        WHEN max_score = 0 THEN 0E0
        ELSE round(
            ln(1E0 + CAST(score AS DOUBLE) / 4294967296E0) / ln(1E0 + CAST(max_score AS DOUBLE) / 4294967296E0) * 1E2
        ) / 1E2
    END AS search_modifier
FROM ranked
