-- artist_popularity: one row per masterArtistId of the catalogue,
--   masterArtistId, searchRank, searchModifier
-- ranked by the exact integer score (the sum of its tracks' S) descending,
-- then masterArtistId ascending (docs/design.md, "Scores and ranks" and
-- "Reports and layouts"). The ranking itself is the view popularity_ranks
-- (sql/popularity_ranks.sql), which a runner creates with the run's
-- parameters before running this.
SELECT id AS masterArtistId, search_rank AS searchRank, search_modifier AS searchModifier
FROM popularity_ranks
WHERE report = 'artist_popularity'
ORDER BY search_rank
