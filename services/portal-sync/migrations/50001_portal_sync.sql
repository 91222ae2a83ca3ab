-- portal-sync: what the national portal has acknowledged, per dossier (services/portal-sync).
CREATE TABLE portal_sync (
    dossier_id       text PRIMARY KEY,
    -- The highest version the stream announced.
    wanted_version   integer NOT NULL CHECK (wanted_version >= 1),
    -- The last version whose dossier record (DongBoHoSoMC) the portal acknowledged.
    record_version   integer NOT NULL DEFAULT 0,
    -- The last event version whose progress entry (CapNhatTienDoHoSoMC) it acknowledged.
    progress_version integer NOT NULL DEFAULT 0,
    -- When the stream first announced a version not yet acknowledged (NULL: up to date).
    pending_since    timestamptz,
    first_synced_at  timestamptz,
    last_synced_at   timestamptz,
    -- Turns that brought the portal up to date later than portal.late_after_secs after the
    -- oldest event they carried was recorded.
    late_syncs       integer NOT NULL DEFAULT 0,
    -- Transient failures in a row, and when to try again.
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    last_error       text,
    -- A version the portal refused permanently (poison): not sent again; a later version is.
    refused_version  integer,
    refused_at       timestamptz,
    refusal          text,
    -- An instance working on the dossier holds it until then.
    leased_until     timestamptz
);

CREATE INDEX portal_sync_due ON portal_sync (next_attempt_at)
    WHERE wanted_version > LEAST(record_version, progress_version);
