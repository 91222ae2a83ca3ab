-- "As recorded at T" without rescanning the log prefix (ARCHITECTURE.md, "As recorded at T";
-- `projection::asof`). A background checkpointer cuts the log into windows of consecutive
-- positions: checkpoint `seq` = k closes the window (position of k − 1, `position`]. For each
-- window it stores the change of the coarse figures between the two positions — Σ over the
-- dossiers with an event in the window of contribution(events ≤ P_k) − contribution(events ≤
-- P_{k−1}) — expanded into the rollups {} and {level} (`asof::CHECKPOINT_ROLLUPS`) at day,
-- month and year grain, as `stats_rollup` is; `agency` and `sector` are '' (kept as columns so
-- that finer rollups can be added without another table).
--
-- `asof_cells` holds those changes in tiers: tier 0, block b is window b + 1; tier t, block b is
-- the sum of windows b·16^t + 1 ..= (b + 1)·16^t (written with the window that completes it).
-- The figures as of checkpoint K are the sum of at most 15 blocks per tier (the base-16 digits
-- of K), whatever K.
CREATE TABLE asof_checkpoints (
    seq         bigint      PRIMARY KEY CHECK (seq > 0),
    -- The window's last position; every event up to it is counted by checkpoints 1..=seq.
    position    bigint      NOT NULL UNIQUE CHECK (position > 0),
    -- `recorded_at` of the event at `position` (never decreasing along positions).
    recorded_at timestamptz NOT NULL,
    dossiers    integer     NOT NULL,
    cells       integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A query looks up the last checkpoint recorded at or before its instant.
CREATE INDEX asof_checkpoints_recorded_at ON asof_checkpoints (recorded_at, seq);

CREATE TABLE asof_cells (
    tier    smallint NOT NULL CHECK (tier >= 0),
    block   bigint   NOT NULL CHECK (block >= 0),
    rollup  smallint NOT NULL CHECK (rollup IN (0, 1)),
    grain   text     NOT NULL CHECK (grain IN ('d', 'm', 'y')),
    period  date     NOT NULL,
    level   text     NOT NULL,
    agency  text     NOT NULL,
    sector  text     NOT NULL,
    metric  text     NOT NULL,
    value   numeric  NOT NULL CHECK (value <> 0),
    -- A query seeks each of its blocks, then a rollup and a few period ranges of a grain.
    CONSTRAINT asof_cells_pkey PRIMARY KEY
        (tier, block, rollup, grain, period, level, agency, sector, metric)
);
