-- track_popularity: one row per catalogue track,
--   trackId, searchRank, searchModifier
-- ranked by the exact integer score S descending, then trackId ascending
-- (docs/design.md, "Scores and ranks" and "Reports and layouts"). The
-- ranking itself is the view popularity_ranks (sql/popularity_ranks.sql),
-- which a runner creates with the run's parameters before running this.
SELECT id AS trackId, search_rank AS searchRank, search_modifier AS searchModifier
FROM popularity_ranks
WHERE report = 'track_popularity'
ORDER BY search_rank
