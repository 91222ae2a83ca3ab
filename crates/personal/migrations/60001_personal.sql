-- The applicant's personal data lives encrypted in the events; this table holds each dossier's
-- data key, wrapped by a master key, and the hash of its citizen lookup secret. Erasure sets the
-- wrapped key to NULL: the events' ciphertext can then never be opened again.
CREATE TABLE personal_keys (
    dossier_id     text PRIMARY KEY,
    master_key_id  text,
    wrap_nonce     bytea,
    wrapped_key    bytea,
    -- SHA-256 of the dossier's lookup secret (crate personal, LookupSecret::digest).
    lookup_sha256  bytea NOT NULL CHECK (length(lookup_sha256) = 32),
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    erased_at      timestamptz,
    erased_by      text,
    -- The erasure request's reference (a case number), never personal data.
    erasure_ref    text,
    CHECK ((erased_at IS NULL) = (wrapped_key IS NOT NULL)),
    CHECK ((wrapped_key IS NULL) = (master_key_id IS NULL) AND (wrapped_key IS NULL) = (wrap_nonce IS NULL))
);
CREATE INDEX personal_keys_by_master_key ON personal_keys (master_key_id) WHERE master_key_id IS NOT NULL;

-- Every read of personal data (and every refusal and erasure): who, when, which dossier, why.
CREATE TABLE personal_access_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    dossier_id  text NOT NULL,
    reader      text NOT NULL,
    agency      text,
    purpose     text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('read', 'erased_data', 'denied', 'erased'))
);
CREATE INDEX personal_access_log_by_dossier ON personal_access_log (dossier_id, id);

CREATE FUNCTION personal_access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'personal_access_log is append-only';
END $$;
CREATE TRIGGER personal_access_log_no_update BEFORE UPDATE OR DELETE ON personal_access_log
    FOR EACH ROW EXECUTE FUNCTION personal_access_log_append_only();
CREATE TRIGGER personal_access_log_no_truncate BEFORE TRUNCATE ON personal_access_log
    FOR EACH STATEMENT EXECUTE FUNCTION personal_access_log_append_only();
