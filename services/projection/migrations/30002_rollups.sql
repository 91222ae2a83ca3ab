-- Pre-aggregation: the day-grain deltas of `stats_daily` kept also at month and year grain, and
-- for a few rollups over subsets of the slice dimensions, so that a query reads a number of
-- rows that does not grow with the length of history (see `store::query`).
--
-- `rollup` is a bit mask over the dimensions in `stats::Dimension::ALL` order: level = 1,
-- agency = 2, sector = 4, procedure = 8, channel = 16, applicant_type = 32. A dimension outside
-- the rollup is stored as '' (no real value is empty). The rollups kept: 63 (every dimension),
-- 7 {level, agency, sector}, 5 {level, sector}, 3 {level, agency}, 1 {level}, 0 {}.
-- `grain` is 'd' (day), 'm' (month) or 'y' (year); `period` is the first day of the period.
-- Every cell holds the sum of the day deltas of its slices and days, as `stats_daily` did:
-- flows counted on a day, stocks as deltas from the start of a day on.
CREATE TABLE stats_rollup (
    rollup         smallint NOT NULL CHECK (rollup IN (0, 1, 3, 5, 7, 63)),
    grain          text     NOT NULL CHECK (grain IN ('d', 'm', 'y')),
    period         date     NOT NULL,
    level          text     NOT NULL,
    agency         text     NOT NULL,
    sector         text     NOT NULL,
    procedure      text     NOT NULL,
    channel        text     NOT NULL,
    applicant_type text     NOT NULL,
    metric         text     NOT NULL,
    value          bigint   NOT NULL,
    CONSTRAINT stats_rollup_period_aligned CHECK (
        grain = 'd'
        OR (grain = 'm' AND extract(day FROM period) = 1)
        OR (grain = 'y' AND extract(day FROM period) = 1 AND extract(month FROM period) = 1)
    ),
    -- Queries select a rollup and a few period ranges of a grain: those lead.
    CONSTRAINT stats_rollup_pkey PRIMARY KEY
        (rollup, grain, period, level, agency, sector, procedure, channel, applicant_type, metric)
);

-- Existing deployments: carry the day-grain figures over, then drop the old table (the
-- all-dimension day grain of `stats_rollup` holds exactly what it held).
INSERT INTO stats_rollup
    (rollup, grain, period, level, agency, sector, procedure, channel, applicant_type, metric, value)
SELECT r.rollup, g.grain,
       CASE g.grain
           WHEN 'd' THEN d.day
           WHEN 'm' THEN make_date(extract(year FROM d.day)::int, extract(month FROM d.day)::int, 1)
           ELSE make_date(extract(year FROM d.day)::int, 1, 1)
       END AS period,
       CASE WHEN r.rollup & 1 <> 0 THEN d.level ELSE '' END,
       CASE WHEN r.rollup & 2 <> 0 THEN d.agency ELSE '' END,
       CASE WHEN r.rollup & 4 <> 0 THEN d.sector ELSE '' END,
       CASE WHEN r.rollup & 8 <> 0 THEN d.procedure ELSE '' END,
       CASE WHEN r.rollup & 16 <> 0 THEN d.channel ELSE '' END,
       CASE WHEN r.rollup & 32 <> 0 THEN d.applicant_type ELSE '' END,
       d.metric,
       SUM(d.value)
FROM stats_daily d
CROSS JOIN (VALUES (0), (1), (3), (5), (7), (63)) AS r (rollup)
CROSS JOIN (VALUES ('d'), ('m'), ('y')) AS g (grain)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
HAVING SUM(d.value) <> 0;

DROP TABLE stats_daily;
