-- product_popularity: one row per productId of the catalogue,
--   productId, searchRank, searchModifier
-- ranked by the exact integer score (the sum of its tracks' S) descending,
-- then productId ascending (docs/design.md, "Scores and ranks" and "Reports
-- and layouts"), from the run's rows of track_scores.sql (the table
-- run_scores, partition run_id and attempt below: a runner replaces both
-- values). Items are in rank order; on Athena, UNLOAD writes them as several
-- files, each in rank order.
WITH
items AS (
    SELECT productId AS id, sum(score) AS score
    FROM run_scores
    WHERE run_id = '20261119030000' AND attempt = 'local' AND in_catalogue
    GROUP BY productId
),
ranked AS (
    SELECT
        id,
        score,
        row_number() OVER (ORDER BY score DESC, id ASC) AS search_rank,
        max(score) OVER () AS max_score
    FROM items
)
SELECT
    id AS productId,
    search_rank AS searchRank,
    CASE
        WHEN max_score = 0 THEN 0E0
        ELSE round(
            ln(1E0 + CAST(score AS DOUBLE) / 4294967296E0) / ln(1E0 + CAST(max_score AS DOUBLE) / 4294967296E0) * 1E2
        ) / 1E2
    END AS searchModifier
FROM ranked
ORDER BY search_rank
