-- The projection's tables: per-dossier contributions (what each dossier has added to the
-- aggregates, and up to which version of the dossier) and the day-grain aggregates.

CREATE TABLE projection_contributions (
    dossier_id   text PRIMARY KEY,
    -- stats::Contribution as JSON; NULL while the dossier contributes nothing.
    contribution jsonb,
    -- The dossier version the contribution was computed from (0: nothing applied yet).
    version      integer NOT NULL DEFAULT 0
);

CREATE TABLE stats_daily (
    day            date   NOT NULL,
    level          text   NOT NULL,
    agency         text   NOT NULL,
    sector         text   NOT NULL,
    procedure      text   NOT NULL,
    channel        text   NOT NULL,
    applicant_type text   NOT NULL,
    metric         text   NOT NULL,
    value          bigint NOT NULL,
    PRIMARY KEY (level, agency, sector, procedure, channel, applicant_type, day, metric)
);

CREATE INDEX stats_daily_day ON stats_daily (day);
