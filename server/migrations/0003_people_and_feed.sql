-- gesync schema, step 3: the feed order of each record, the accounts, their devices and the
-- audit chain, as tables a DBA can read.
--
-- Kept as the tables of step 2 are: the trigger on `gesync.kv` rewrites the affected row in the
-- same transaction as each change to the keyspace. What stays out: password hashes (an
-- account's row says who may do what, not how they prove it), sessions and refresh tokens, the
-- server's secrets, unfinished uploads, and records' documents (the keyspace's `r/` rows).

-- A record's place in the feed: phones read a commune's changes in `feed_seq` order, each record
-- once, at its latest change. Numbers are given one after the other under the store's write
-- lock, never out of order: whoever sees a number sees every smaller one given before it (a
-- record that changes leaves its old number for a new one, so numbers of the past are missing).
ALTER TABLE gesync.records ADD COLUMN feed_seq BIGINT;
CREATE INDEX records_feed ON gesync.records (commune, feed_seq);
COMMENT ON COLUMN gesync.records.feed_seq IS 'The record''s place in its commune''s feed: the store''s sequence number of its latest change';

CREATE TABLE gesync.accounts (
    username      TEXT PRIMARY KEY,
    role          TEXT NOT NULL,          -- 'admin', 'province_staff', 'district_staff', 'commune_officer'
    org_unit      TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL,
    session_epoch BIGINT NOT NULL         -- bumped when a disable, password or role change ends its sessions
);
COMMENT ON TABLE gesync.accounts IS 'Accounts: who may do what where (no password hashes)';

CREATE TABLE gesync.devices (
    username   TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL,      -- its last login
    revoked    BOOLEAN NOT NULL,
    PRIMARY KEY (username, device_id)
);
COMMENT ON TABLE gesync.devices IS 'The phones and browsers each account has logged in from';

CREATE TABLE gesync.audit (
    seq       BIGINT PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    username  TEXT NOT NULL,
    device_id TEXT,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL               -- SHA-256 over the entry and prev_hash: a chain
);
CREATE INDEX audit_by_user ON gesync.audit (username, at);
COMMENT ON TABLE gesync.audit IS 'The audit chain: who did what, when (`gesync-server check` verifies it and its signed checkpoints)';

-- Step 2's projection, with the record's feed order and the three new families of keys:
-- 'u/{username}' an account, 'd/{username}/{device_id}' a device, 'a/' + 8 bytes an audit entry
-- (all JSON). A key of another form under these prefixes is not the server's and is left alone.
CREATE OR REPLACE FUNCTION gesync.project(key BYTEA, val BYTEA) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, gesync AS $$
DECLARE
    shown  TEXT := encode(key, 'escape');   -- bytes that are not ASCII escaped: never fails
    rest   TEXT;
    unit   TEXT;
    part   TEXT;
    doc    JSONB;
    rid    UUID;
BEGIN
    IF substr(key, 1, 3) = 'fx/'::BYTEA AND length(key) = 19 THEN
        rid := encode(substr(key, 4), 'hex')::UUID;
        IF val IS NULL THEN
            DELETE FROM gesync.records WHERE id = rid;
        ELSE
            doc := convert_from(val, 'UTF8')::JSONB;
            INSERT INTO gesync.records (id, kind, commune, record_date, quarter, deleted, updated_at, counts, facts, feed_seq)
            VALUES (rid, doc->>'kind', doc->>'commune', (doc->>'date')::DATE, doc->>'quarter',
                    COALESCE((doc->>'deleted')::BOOLEAN, false), to_timestamp((doc->>'updated_at')::BIGINT),
                    COALESCE(doc->'counts', '{}'::JSONB), NULLIF(doc->'facts', 'null'::JSONB), (doc->>'seq')::BIGINT)
            ON CONFLICT (id) DO UPDATE
               SET kind = EXCLUDED.kind, commune = EXCLUDED.commune, record_date = EXCLUDED.record_date,
                   quarter = EXCLUDED.quarter, deleted = EXCLUDED.deleted, updated_at = EXCLUDED.updated_at,
                   counts = EXCLUDED.counts, facts = EXCLUDED.facts,
                   -- a reporting row written before it carried its feed order keeps the one it has
                   feed_seq = COALESCE(EXCLUDED.feed_seq, records.feed_seq);
        END IF;
    ELSIF shown ~ '^o/[0-9]{2,12}$' THEN
        unit := substr(shown, 3);
        IF val IS NULL THEN
            DELETE FROM gesync.org_units WHERE code = unit;
        ELSE
            doc := convert_from(val, 'UTF8')::JSONB;
            INSERT INTO gesync.org_units
            VALUES (unit, doc->>'name', doc->>'parent', doc->>'level', doc->>'merged_into', (doc->>'effective')::DATE)
            ON CONFLICT (code) DO UPDATE
               SET name = EXCLUDED.name, parent = EXCLUDED.parent, level = EXCLUDED.level,
                   merged_into = EXCLUDED.merged_into, merged_on = EXCLUDED.merged_on;
        END IF;
    ELSIF shown ~ '^t/[0-9]{2,12}/[a-z_]+$' THEN
        rest := substr(shown, 3);
        unit := split_part(rest, '/', 1);
        part := split_part(rest, '/', 2);
        DELETE FROM gesync.targets WHERE org_unit = unit AND indicator = part;
        IF val IS NOT NULL THEN
            INSERT INTO gesync.targets
            SELECT unit, part, e.key::INT, e.value::DOUBLE PRECISION
              FROM jsonb_each_text(convert_from(val, 'UTF8')::JSONB) AS e;
        END IF;
    ELSIF substr(key, 1, 2) = 'u/'::BYTEA AND length(key) > 2 THEN
        IF val IS NULL THEN
            DELETE FROM gesync.accounts WHERE username = substr(shown, 3);
        ELSE
            doc := convert_from(val, 'UTF8')::JSONB;
            INSERT INTO gesync.accounts
            VALUES (doc->>'username', doc->>'role', doc->>'org_unit', COALESCE((doc->>'disabled')::BOOLEAN, false),
                    COALESCE((doc->>'session_epoch')::BIGINT, 0))
            ON CONFLICT (username) DO UPDATE
               SET role = EXCLUDED.role, org_unit = EXCLUDED.org_unit, disabled = EXCLUDED.disabled,
                   session_epoch = EXCLUDED.session_epoch;
        END IF;
    ELSIF substr(key, 1, 2) = 'd/'::BYTEA AND position('/'::BYTEA IN substr(key, 3)) > 1 THEN
        IF val IS NULL THEN
            rest := substr(shown, 3);
            unit := split_part(rest, '/', 1);       -- the username (it holds no '/')
            DELETE FROM gesync.devices WHERE username = unit AND device_id = substr(rest, length(unit) + 2);
        ELSE
            doc := convert_from(val, 'UTF8')::JSONB;
            INSERT INTO gesync.devices
            VALUES (doc->>'username', doc->>'device_id', to_timestamp((doc->>'first_seen')::BIGINT),
                    to_timestamp((doc->>'last_seen')::BIGINT), COALESCE((doc->>'revoked')::BOOLEAN, false))
            ON CONFLICT (username, device_id) DO UPDATE
               SET first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen, revoked = EXCLUDED.revoked;
        END IF;
    ELSIF substr(key, 1, 2) = 'a/'::BYTEA AND length(key) = 10 THEN
        IF val IS NULL THEN
            DELETE FROM gesync.audit WHERE seq = ('x' || encode(substr(key, 3), 'hex'))::BIT(64)::BIGINT;
        ELSE
            doc := convert_from(val, 'UTF8')::JSONB;
            INSERT INTO gesync.audit
            VALUES ((doc->>'seq')::BIGINT, to_timestamp((doc->>'at')::BIGINT), doc->>'user', doc->>'device_id',
                    doc->>'action', doc->>'target', doc->>'prev_hash', doc->>'hash')
            ON CONFLICT (seq) DO UPDATE
               SET at = EXCLUDED.at, username = EXCLUDED.username, device_id = EXCLUDED.device_id,
                   action = EXCLUDED.action, target = EXCLUDED.target, prev_hash = EXCLUDED.prev_hash,
                   hash = EXCLUDED.hash;
        END IF;
    END IF;
END
$$;

-- The triggers, for the three new families too (still nothing on the feed, documents,
-- counters, sessions or uploads).
DROP TRIGGER kv_projects ON gesync.kv;
DROP TRIGGER kv_projects_removal ON gesync.kv;
CREATE TRIGGER kv_projects AFTER INSERT OR UPDATE ON gesync.kv
    FOR EACH ROW
    WHEN (substr(NEW.k, 1, 2) IN ('o/'::BYTEA, 't/'::BYTEA, 'u/'::BYTEA, 'd/'::BYTEA, 'a/'::BYTEA)
          OR substr(NEW.k, 1, 3) = 'fx/'::BYTEA)
    EXECUTE FUNCTION gesync.project_kv();
CREATE TRIGGER kv_projects_removal AFTER DELETE ON gesync.kv
    FOR EACH ROW
    WHEN (substr(OLD.k, 1, 2) IN ('o/'::BYTEA, 't/'::BYTEA, 'u/'::BYTEA, 'd/'::BYTEA, 'a/'::BYTEA)
          OR substr(OLD.k, 1, 3) = 'fx/'::BYTEA)
    EXECUTE FUNCTION gesync.project_kv();

-- Rewrites every table above from the keyspace, under the store's write lock (no write runs
-- meanwhile). `migrate` runs it once; a DBA whose tables `gesync-server check` finds out of
-- step with the keyspace (rows edited by hand) runs it as the schema's owner:
--     SELECT gesync.reproject();
-- A record's feed order comes from its reporting row, or, for a row written before it carried
-- one, from the feed itself ('f/{commune}/' + 8 bytes → the record's 16-byte id).
CREATE FUNCTION gesync.reproject() RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, gesync AS $$
BEGIN
    PERFORM 1 FROM gesync.write_lock FOR UPDATE;
    DELETE FROM gesync.records;
    DELETE FROM gesync.org_units;
    DELETE FROM gesync.targets;
    DELETE FROM gesync.accounts;
    DELETE FROM gesync.devices;
    DELETE FROM gesync.audit;
    PERFORM gesync.project(k, v) FROM gesync.kv
      WHERE substr(k, 1, 2) IN ('o/'::BYTEA, 't/'::BYTEA, 'u/'::BYTEA, 'd/'::BYTEA, 'a/'::BYTEA)
         OR substr(k, 1, 3) = 'fx/'::BYTEA;
    UPDATE gesync.records r
       SET feed_seq = ('x' || encode(substr(f.k, length(f.k) - 7), 'hex'))::BIT(64)::BIGINT
      FROM gesync.kv f
     WHERE r.feed_seq IS NULL AND substr(f.k, 1, 2) = 'f/'::BYTEA AND length(f.v) = 16
       AND encode(f.v, 'hex')::UUID = r.id;
END
$$;
REVOKE ALL ON FUNCTION gesync.reproject() FROM PUBLIC;

-- What the keyspace already holds.
SELECT gesync.reproject();
