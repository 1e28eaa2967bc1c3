-- run_inputs: one row counting the run's rows of track_scores.sql (the table
-- run_scores, partition run_id and attempt below: a runner replaces both
-- values), for the run manifest's "inputs" and the publish step's checks
-- (docs/scaling.md, "The publish step"):
--   catalogue_rows           tracks of the catalogue (rows, duplicates included)
--   catalogue_tracks         distinct trackIds of the catalogue: fewer than
--                            catalogue_rows means a duplicate trackId
--   artists, products        distinct masterArtistIds and productIds: the
--                            rows the artist and product reports must have
--   play_rows                rows of plays/ inside the window
--   unknown_track_play_rows  those of trackIds the catalogue does not hold
--   unknown_track_plays      the sum of their plays
--   negative_play_rows       rows with negative plays (bad input)
-- Counts of rows and of distinct ids, all BIGINT (count_if cast: DuckDB's is
-- HUGEINT, which its Parquet writer stores as DOUBLE; Trino's is BIGINT).
SELECT
    CAST(count_if(in_catalogue) AS BIGINT) AS catalogue_rows,
    count(DISTINCT CASE WHEN in_catalogue THEN trackId END) AS catalogue_tracks,
    count(DISTINCT CASE WHEN in_catalogue THEN masterArtistId END) AS artists,
    count(DISTINCT CASE WHEN in_catalogue THEN productId END) AS products,
    CAST(coalesce(sum(play_rows), 0) AS BIGINT) AS play_rows,
    CAST(coalesce(sum(CASE WHEN in_catalogue THEN 0 ELSE play_rows END), 0) AS BIGINT) AS unknown_track_play_rows,
    CAST(coalesce(sum(CASE WHEN in_catalogue THEN 0 ELSE plays END), 0) AS BIGINT) AS unknown_track_plays,
    CAST(coalesce(sum(negative_play_rows), 0) AS BIGINT) AS negative_play_rows
FROM run_scores
WHERE run_id = '20261119030000' AND attempt = 'local'
