-- The append-only event log (crate `eventlog`). Versions 10001.. belong to this crate; other
-- crates keep their own ranges in the same `_sqlx_migrations` table.

CREATE TABLE events (
    -- Global position: 1, 2, 3, ... with no gaps, assigned in commit order (see `append.rs`).
    position    bigint      PRIMARY KEY CHECK (position > 0),
    -- Chosen by the client; the idempotency key.
    event_id    uuid        NOT NULL,
    dossier_id  text        NOT NULL CHECK (dossier_id <> '' AND char_length(dossier_id) <= 128),
    -- 1-based version within the dossier.
    version     integer     NOT NULL CHECK (version > 0),
    event_type  text        NOT NULL CHECK (event_type ~ '^[a-z_]+$'),
    -- Business time at the counter.
    occurred_at timestamptz NOT NULL,
    -- Database time when the position was assigned; never decreases along positions.
    recorded_at timestamptz NOT NULL,
    level       text        NOT NULL,
    agency      text        NOT NULL,
    sector      text        NOT NULL,
    payload     jsonb       NOT NULL,
    -- SHA-256 of the client request that produced the event.
    fingerprint bytea       NOT NULL CHECK (octet_length(fingerprint) = 32),
    -- SHA-256(0x00 || canonical bytes): the RFC 6962 leaf hash.
    event_hash  bytea       NOT NULL CHECK (octet_length(event_hash) = 32),
    -- SHA-256(previous chain_hash || event_hash); the predecessor of position 1 is 32 zero bytes.
    chain_hash  bytea       NOT NULL CHECK (octet_length(chain_hash) = 32),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Also the index behind loading a dossier and finding its current version.
    CONSTRAINT events_dossier_version_key UNIQUE (dossier_id, version)
);

-- No index on agency or occurred_at: no query of this crate needs one, and every index slows
-- the bulk import of historical events. Statistics are computed from projections, not here.

COMMENT ON TABLE events IS
    'Append-only event log. Rows are never updated or deleted (enforced by triggers).';

-- The sequencer: one row holding the last assigned position, the chain hash at that position and
-- the recorded_at given to it. Every append locks this row (UPDATE) as the last step before its
-- commit, which serialises position assignment in commit order.
CREATE TABLE log_head (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    position    bigint      NOT NULL CHECK (position >= 0),
    chain_hash  bytea       NOT NULL CHECK (octet_length(chain_hash) = 32),
    recorded_at timestamptz NOT NULL
);

INSERT INTO log_head (singleton, position, chain_hash, recorded_at)
VALUES (true, 0, decode(repeat('00', 32), 'hex'), '1970-01-01T00:00:00Z');

-- Immutability, enforced by the database whatever the client.
CREATE FUNCTION eventlog_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on table "%" is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'events are immutable; record a new event that corrects the earlier one';
END;
$$;

-- Statement-level, so even an UPDATE or DELETE matching no row is refused.
CREATE TRIGGER events_refuse_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog_refuse_change();

CREATE TRIGGER events_refuse_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog_refuse_change();

-- The head row may only move forward; it may never disappear or be duplicated.
CREATE TRIGGER log_head_refuse_insert_delete
    BEFORE INSERT OR DELETE OR TRUNCATE ON log_head
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog_refuse_change();

CREATE FUNCTION eventlog_head_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.position < OLD.position OR NEW.recorded_at < OLD.recorded_at THEN
        RAISE EXCEPTION 'log_head may only move forward (position % -> %)', OLD.position, NEW.position
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER log_head_forward
    BEFORE UPDATE ON log_head
    FOR EACH ROW EXECUTE FUNCTION eventlog_head_forward();
