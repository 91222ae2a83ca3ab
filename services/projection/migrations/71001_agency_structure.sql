-- The agency structure as versioned data (README, "Two-tier government and merged provinces"):
-- agencies declared, their changes from a date (merged, renamed, dissolved, level), levels
-- abolished. One row per entry, never updated or deleted: who added it (`recorded_by`: an
-- administrator's name given to `projection agencies publish`, or `config:<path>` for the file
-- loaded at start) and when. `key` names what the entry is about ("change of X from D"); a
-- publication whose entry contradicts a recorded one with the same key is refused, so the
-- structure asked for a date never changes behind a report already printed for it, except by
-- entries added later (a correction is a new, later-dated change).
CREATE TABLE agency_structure_entries (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         text        NOT NULL UNIQUE,
    entry       jsonb       NOT NULL,
    recorded_by text        NOT NULL CHECK (recorded_by <> ''),
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
