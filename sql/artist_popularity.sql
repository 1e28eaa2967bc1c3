-- artist_popularity (docs/design.md, "Scores and ranks" and "Reports and
-- layouts"): one row per masterArtistId of the catalogue,
--   masterArtistId, searchRank, searchModifier
-- ranked by the exact integer score (the sum of its tracks' S) descending,
-- then masterArtistId ascending. Up to `scores` the text is track_popularity.sql's.
--
-- Written for Athena (Trino SQL, engine version 3) over the tables the
-- template's Athena option creates (catalogue, plays); the project's test runs
-- the same text in DuckDB and compares every row with `popularity rank`
-- (sql/test_sql_matches_rust.py). Keep it in the SQL both engines accept:
-- docs/scaling.md lists where they differ and how this text avoids it.
--
-- The run's parameters are the three values of `run` below; a runner replaces
-- them (the test does, with the same regular expressions docs/scaling.md shows).
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
-- Every artist of the catalogue: the exact sum of its tracks' S (0 when none
-- was played); plays of unknown tracks drop out here.
scores AS (
    SELECT
        c.masterArtistId AS id,
        sum(coalesce(CAST(s.score AS DECIMAL(38, 0)), CAST(0 AS DECIMAL(38, 0)))) AS score
    FROM catalogue AS c
    LEFT JOIN played AS s ON s.trackId = c.trackId
    GROUP BY c.masterArtistId
),
ranked AS (
    SELECT
        id,
        score,
        row_number() OVER (ORDER BY score DESC, id ASC) AS search_rank,
        max(score) OVER () AS max_score
    FROM scores
)
SELECT
    id AS masterArtistId,
    search_rank AS searchRank,
    CASE
        WHEN max_score = 0 THEN 0E0
        ELSE round(
            ln(1E0 + CAST(score AS DOUBLE) / 4294967296E0) / ln(1E0 + CAST(max_score AS DOUBLE) / 4294967296E0) * 1E2
        ) / 1E2
    END AS searchModifier
FROM ranked
ORDER BY search_rank
