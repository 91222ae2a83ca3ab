-- The deadline watcher's read model (services/processing): for every received dossier, its due
-- time in force and whether it is paused for a supplement, closed (resolved, withdrawn or
-- stopped) or already marked late; and how far in the event log the table is up to date.
-- Both are updated in one transaction per batch of events, so the table always equals the fold
-- of the log up to `deadline_watch_cursor.position`.
--
-- Versions 20001 and up belong to the processing service; the event log's are 10001 and up.

CREATE TABLE deadline_watch (
    dossier_id  text        PRIMARY KEY,
    due_at      timestamptz NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    closed      boolean     NOT NULL DEFAULT false,
    late_marked boolean     NOT NULL DEFAULT false
);

-- The watcher's only query: dossiers due before now, running, not yet marked.
CREATE INDEX deadline_watch_due ON deadline_watch (due_at, dossier_id)
    WHERE NOT paused AND NOT closed AND NOT late_marked;

CREATE TABLE deadline_watch_cursor (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The last log position applied to deadline_watch.
    position  bigint  NOT NULL CHECK (position >= 0)
);

INSERT INTO deadline_watch_cursor (singleton, position) VALUES (true, 0);
