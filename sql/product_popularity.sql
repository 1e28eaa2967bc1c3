-- product_popularity: one row per productId of the catalogue,
--   productId, searchRank, searchModifier
-- ranked by the exact integer score (the sum of its tracks' S) descending,
-- then productId ascending (docs/design.md, "Scores and ranks" and
-- "Reports and layouts"). The ranking itself is the view popularity_ranks
-- (sql/popularity_ranks.sql), which a runner creates with the run's
-- parameters before running this.
SELECT id AS productId, search_rank AS searchRank, search_modifier AS searchModifier
FROM popularity_ranks
WHERE report = 'product_popularity'
ORDER BY search_rank
