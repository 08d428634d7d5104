-- gesync schema, step 4: the districts' approvals of their figures, the records' open conflicts
-- and the audit chain's signed checkpoints, as tables a DBA can read.
--
-- Kept as the tables of steps 2 and 3 are: a trigger on `gesync.kv` rewrites the affected rows
-- in the same transaction as each change to the keyspace. Its own function and trigger, on
-- three families of keys that change rarely, so the write path pays nothing on the others:
--   'ap/{unit}/{period}'      an approval (JSON), written when a district approves a period and
--                             again by a record write that alters the figures approved;
--   'q/{commune}/' + 16 bytes a record's open conflicts (JSON list), written when a record's
--                             conflicts change, removed when it has none left;
--   'ac/' + 8 bytes           a signed checkpoint of the audit chain (JSON), every 64 entries.
-- What stays out: the competing values of a conflict (they may be free text about a person):
-- a conflict's row names the record, the field and how many values compete.

CREATE TABLE gesync.approvals (
    org_unit       TEXT NOT NULL,          -- the unit approved (it may have been merged since)
    period         TEXT NOT NULL,          -- '2025', '2025S1', '2025Q3'
    approved_by    TEXT NOT NULL,
    approved_at    TIMESTAMPTZ NOT NULL,
    changes_after  BIGINT NOT NULL,        -- record changes synced after it that altered these figures
    last_change_at TIMESTAMPTZ,            -- the latest of them
    figures        JSONB NOT NULL,         -- the figures as approved (`GET /api/v1/indicators`)
    PRIMARY KEY (org_unit, period)
);
COMMENT ON TABLE gesync.approvals IS 'The districts'' approvals of their figures for a period, and the changes synced after them that altered those figures';

CREATE TABLE gesync.conflicts (
    record_id UUID NOT NULL,
    commune   TEXT NOT NULL,               -- where the record was made
    path      TEXT NOT NULL,               -- the field: 'status', 'victim.sex', 'deleted', ...
    competing INT NOT NULL,                -- how many different values compete (never the values)
    PRIMARY KEY (record_id, path)
);
CREATE INDEX conflicts_by_commune ON gesync.conflicts (commune);
COMMENT ON TABLE gesync.conflicts IS 'Fields of records with concurrent different values, open until a reviewer resolves them (the values stay in the keyspace)';

CREATE TABLE gesync.audit_checkpoints (
    seq       BIGINT PRIMARY KEY,           -- the audit entry signed: the chain had this many
    hash      TEXT NOT NULL,                -- that entry's hash
    prev      TEXT,                         -- the previous checkpoint's signature
    signature TEXT NOT NULL                 -- Ed25519, by the server's audit key
);
COMMENT ON TABLE gesync.audit_checkpoints IS 'Signed checkpoints of the audit chain (`gesync-server check` verifies them)';

-- Rewrites the rows that one entry of those three families stands for (`val` NULL: the entry
-- was removed). A key of another form under these prefixes is not the server's and is left
-- alone.
CREATE FUNCTION gesync.project_review(key BYTEA, val BYTEA) RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, gesync AS $$
DECLARE
    shown   TEXT := encode(key, 'escape');   -- bytes that are not ASCII escaped: never fails
    doc     JSONB;
    rid     UUID;
    commune TEXT;
BEGIN
    IF shown ~ '^ap/[0-9]{2,12}/[0-9]{4}(Q[1-4]|S[12])?$' THEN
        IF val IS NULL THEN
            DELETE FROM gesync.approvals
             WHERE org_unit = split_part(shown, '/', 2) AND period = split_part(shown, '/', 3);
        ELSE
            doc := convert_from(val, 'UTF8')::JSONB;
            INSERT INTO gesync.approvals
            VALUES (doc->>'org_unit', doc->>'period', doc->>'approved_by', to_timestamp((doc->>'approved_at')::BIGINT),
                    COALESCE((doc->>'changes_after')::BIGINT, 0), to_timestamp((doc->>'last_change_at')::BIGINT),
                    COALESCE(doc->'figures', 'null'::JSONB))
            ON CONFLICT (org_unit, period) DO UPDATE
               SET approved_by = EXCLUDED.approved_by, approved_at = EXCLUDED.approved_at,
                   changes_after = EXCLUDED.changes_after, last_change_at = EXCLUDED.last_change_at,
                   figures = EXCLUDED.figures;
        END IF;
    ELSIF substr(key, 1, 2) = 'q/'::BYTEA AND length(key) >= 21
          AND substr(key, length(key) - 16, 1) = '/'::BYTEA THEN
        commune := encode(substr(key, 3, length(key) - 19), 'escape');
        IF commune !~ '^[0-9]{2,12}$' THEN
            RETURN;
        END IF;
        rid := encode(substr(key, length(key) - 15), 'hex')::UUID;
        DELETE FROM gesync.conflicts WHERE record_id = rid;
        IF val IS NOT NULL THEN
            INSERT INTO gesync.conflicts
            SELECT rid, commune, c->>'path', jsonb_array_length(COALESCE(c->'values', '[]'::JSONB))
              FROM jsonb_array_elements(convert_from(val, 'UTF8')::JSONB) AS c
            ON CONFLICT (record_id, path) DO UPDATE SET competing = EXCLUDED.competing;
        END IF;
    ELSIF substr(key, 1, 3) = 'ac/'::BYTEA AND length(key) = 11 THEN
        IF val IS NULL THEN
            DELETE FROM gesync.audit_checkpoints WHERE seq = ('x' || encode(substr(key, 4), 'hex'))::BIT(64)::BIGINT;
        ELSE
            doc := convert_from(val, 'UTF8')::JSONB;
            INSERT INTO gesync.audit_checkpoints
            VALUES ((doc->>'seq')::BIGINT, doc->>'hash', doc->>'prev', doc->>'signature')
            ON CONFLICT (seq) DO UPDATE
               SET hash = EXCLUDED.hash, prev = EXCLUDED.prev, signature = EXCLUDED.signature;
        END IF;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION gesync.project_review(BYTEA, BYTEA) FROM PUBLIC;

CREATE FUNCTION gesync.project_review_kv() RETURNS TRIGGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, gesync AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM gesync.project_review(OLD.k, NULL);
    ELSE
        PERFORM gesync.project_review(NEW.k, NEW.v);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION gesync.project_review_kv() FROM PUBLIC;

CREATE TRIGGER kv_projects_review AFTER INSERT OR UPDATE ON gesync.kv
    FOR EACH ROW
    WHEN (substr(NEW.k, 1, 2) = 'q/'::BYTEA OR substr(NEW.k, 1, 3) IN ('ap/'::BYTEA, 'ac/'::BYTEA))
    EXECUTE FUNCTION gesync.project_review_kv();
CREATE TRIGGER kv_projects_review_removal AFTER DELETE ON gesync.kv
    FOR EACH ROW
    WHEN (substr(OLD.k, 1, 2) = 'q/'::BYTEA OR substr(OLD.k, 1, 3) IN ('ap/'::BYTEA, 'ac/'::BYTEA))
    EXECUTE FUNCTION gesync.project_review_kv();

-- `gesync.reproject()` rewrites these tables too: step 3's function, kept under another name,
-- then these three (all under the store's write lock, which the first takes).
ALTER FUNCTION gesync.reproject() RENAME TO reproject_step3;
CREATE FUNCTION gesync.reproject() RETURNS VOID
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, gesync AS $$
BEGIN
    PERFORM gesync.reproject_step3();
    DELETE FROM gesync.approvals;
    DELETE FROM gesync.conflicts;
    DELETE FROM gesync.audit_checkpoints;
    PERFORM gesync.project_review(k, v) FROM gesync.kv
      WHERE substr(k, 1, 2) = 'q/'::BYTEA OR substr(k, 1, 3) IN ('ap/'::BYTEA, 'ac/'::BYTEA);
END
$$;
REVOKE ALL ON FUNCTION gesync.reproject() FROM PUBLIC;

-- What the keyspace already holds.
SELECT gesync.project_review(k, v) FROM gesync.kv
 WHERE substr(k, 1, 2) = 'q/'::BYTEA OR substr(k, 1, 3) IN ('ap/'::BYTEA, 'ac/'::BYTEA);
