-- The early warning (services/processing, `warnings.rs`): dossiers that will be late unless
-- someone acts, maintained by the deadline watcher from its read model.
--
-- deadline_watch gains what the warning needs: the receiving and the holding agency, whether an
-- apology was issued, and two instants computed from the due time by the calendar — the apology
-- deadline (the last on-time moment for an apology) and warn_from (from when the dossier is due
-- soon, by `processing.warning_horizon_minutes`; recomputed by every watcher at its start).
-- Existing rows lack them, so the table is emptied and its cursor set back to 0: the first tick
-- after this migration folds the whole log again (the fold is exact; `late` already recorded
-- is read back from the log, never written twice).

TRUNCATE deadline_watch;
UPDATE deadline_watch_cursor SET position = 0;

ALTER TABLE deadline_watch
    ADD COLUMN agency           text        NOT NULL,
    ADD COLUMN holding_agency   text        NOT NULL,
    ADD COLUMN apologised       boolean     NOT NULL DEFAULT false,
    ADD COLUMN apology_deadline timestamptz NOT NULL,
    ADD COLUMN warn_from        timestamptz NOT NULL;

-- The raise query: running dossiers by the instant they become due soon.
CREATE INDEX deadline_watch_warn ON deadline_watch (warn_from)
    WHERE NOT paused AND NOT closed AND NOT apologised;

-- The warnings raised and not withdrawn: the list the API answers. One per dossier at most.
CREATE TABLE deadline_warnings (
    dossier_id       text        PRIMARY KEY,
    agency           text        NOT NULL,
    holding_agency   text        NOT NULL,
    due_at           timestamptz NOT NULL,
    apology_deadline timestamptz NOT NULL,
    warn_from        timestamptz NOT NULL,
    -- The watcher's clock when it raised the warning.
    raised_at        timestamptz NOT NULL
);

CREATE INDEX deadline_warnings_urgency ON deadline_warnings (due_at, dossier_id);
CREATE INDEX deadline_warnings_agency ON deadline_warnings (agency, due_at, dossier_id);
CREATE INDEX deadline_warnings_holding ON deadline_warnings (holding_agency, due_at, dossier_id);

-- What is still to publish on NATS, in `seq` order: written in the transaction that raises or
-- withdraws a warning, deleted once JetStream acknowledged the message.
CREATE TABLE deadline_warning_outbox (
    seq              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('raised', 'withdrawn')),
    -- Why a warning was withdrawn (NULL when raised).
    reason           text        CHECK ((kind = 'withdrawn') = (reason IS NOT NULL)),
    dossier_id       text        NOT NULL,
    agency           text        NOT NULL,
    holding_agency   text        NOT NULL,
    due_at           timestamptz NOT NULL,
    apology_deadline timestamptz NOT NULL,
    warn_from        timestamptz NOT NULL,
    -- The watcher's clock when the change was made.
    at               timestamptz NOT NULL
);
