-- One UTC day of raw play events -> that day's plays (docs/design.md, "Inputs"):
--   trackId BIGINT, plays BIGINT  for the folder plays/date=YYYY-MM-DD/
-- one row per track played that day, in trackId order.
--
-- Input: the raw event table `play_events` (docs/scaling.md, "Raw play
-- events"): one row per play, trackId BIGINT, playedAt TIMESTAMP (UTC),
-- partitioned by "date" (STRING, YYYY-MM-DD) = the UTC day of playedAt.
-- An event filed under another day than its playedAt, and an event without a
-- trackId, is not counted. Plays of tracks not in the catalogue are kept:
-- rank counts and ignores them (docs/design.md, "Inputs").
--
-- The day is the one literal below (a runner replaces it). On Athena, wrap it
-- in UNLOAD (... ) TO 's3://<data bucket>/<prefix>plays/date=<day>/'
-- WITH (format = 'PARQUET', compression = 'SNAPPY'); docs/scaling.md says why
-- UNLOAD and what rank needs of the files. Runs unchanged in DuckDB (the test
-- writes the result with COPY ... PARTITION_BY).
SELECT
    e.trackId AS trackId,
    count(*) AS plays
FROM play_events AS e
WHERE e."date" = '2026-11-18'
    AND CAST(CAST(e.playedAt AS DATE) AS VARCHAR) = e."date"
    AND e.trackId IS NOT NULL
GROUP BY e.trackId
ORDER BY e.trackId
