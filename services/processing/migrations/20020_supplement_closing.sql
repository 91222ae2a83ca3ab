-- The automatic closing of a dossier whose supplement request went unanswered (the procedure
-- catalogue's `close_after_working_days`, issue 11): the deadline watcher's read model keeps
-- the closing deadline of the pending request. NULL when none is pending or the procedure has
-- no automatic closing.

ALTER TABLE deadline_watch ADD COLUMN closes_at timestamptz;

CREATE INDEX deadline_watch_closing ON deadline_watch (closes_at, dossier_id)
    WHERE closes_at IS NOT NULL AND NOT closed;
