-- The audit service's tables (crate `audit`, versions 40001..): the Merkle tree over the event
-- log and the signed checkpoints. Same database as the log; applied after the log's migrations.

-- The hashes of the perfect subtrees of the tree whose leaves are `events.event_hash` by
-- position: node (level, idx) covers positions idx * 2^level + 1 .. (idx + 1) * 2^level.
-- Level 0 holds the leaves as they were when checkpointed (so a later change to an event is
-- seen even if its event_hash was recomputed). Written once, when the node's last leaf is
-- appended; never changed. Roots and proofs read O(log n) rows of it.
CREATE TABLE merkle_nodes (
    level smallint NOT NULL CHECK (level >= 0 AND level < 64),
    idx   bigint   NOT NULL CHECK (idx >= 0),
    hash  bytea    NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Signed tree heads. `note` is the C2SP signed note exactly as signed (origin, size, base64
-- root, timestamp line, blank line, signature line); the other columns repeat what it says
-- for queries.
CREATE TABLE checkpoints (
    tree_size  bigint      PRIMARY KEY CHECK (tree_size > 0),
    root_hash  bytea       NOT NULL CHECK (octet_length(root_hash) = 32),
    origin     text        NOT NULL,
    key_id     text        NOT NULL,
    signed_at  timestamptz NOT NULL,
    note       text        NOT NULL
);

-- Like the log itself, nodes and checkpoints are append-only (the log's trigger function).
CREATE TRIGGER merkle_nodes_refuse_update_delete
    BEFORE UPDATE OR DELETE OR TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog_refuse_change();

CREATE TRIGGER checkpoints_refuse_update_delete
    BEFORE UPDATE OR DELETE OR TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog_refuse_change();
