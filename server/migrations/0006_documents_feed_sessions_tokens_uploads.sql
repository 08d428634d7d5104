-- gesync schema, step 6: the records' documents, the change feed, web sessions, refresh tokens
-- and uploads in progress, as views a DBA can read.
--
-- Views over the keyspace, as v_counters is (step 5), not tables kept by a trigger: the
-- documents are most of the store's bytes and would be kept twice, and the feed, sessions and
-- tokens change on nearly every request. A view reads what the server keeps, so it is always
-- exact, costs the write path nothing, and leaves `check` nothing to compare.
--
-- None is granted to gesync_reporting: a document holds everything an officer wrote about a
-- person. No view shows a secret: not a session's CSRF token, not a token's hash, not the
-- server's keys ('k/' stays in the keyspace).
--
-- The keys read (records.rs, sessions.rs, auth.rs and uploads.rs own them):
--   'r/' + 16 bytes                       a record's Automerge document, sealed: the byte 0xC5
--                                         and 8 bytes of its SHA-256 before it
--   'f/{commune}/' + 8 bytes (seq, BE)    the feed: the record (16 bytes) at that place of its
--                                         commune's feed (each record appears once, at its
--                                         latest change); the key's order is the index
--   'w/{sha256 hex}'                      a web session (JSON)
--   'rt/{sha256 hex}', 'rf/{family}'      a refresh token (JSON); a family ended
--   'up/{user}/{device}', 'us/{user}/{device}/' + 8 bytes (offset, BE)
--                                         a device's upload in progress: its head (postcard:
--                                         the record id's 16 bytes first), then its slices

CREATE VIEW gesync.documents AS
SELECT encode(substr(k, 3), 'hex')::UUID AS record_id,
       CASE WHEN get_byte(v, 0) = 197 THEN substr(v, 10) ELSE v END AS document,
       length(v) AS stored_bytes
  FROM gesync.kv
 WHERE k >= 'r/'::BYTEA AND k < 'r0'::BYTEA AND length(k) = 18;
COMMENT ON VIEW gesync.documents IS 'Each record''s Automerge document, as the server merged it (load it with Automerge to read it; gesync.records has its kind, commune and feed place)';

CREATE VIEW gesync.feed AS
SELECT convert_from(substr(k, 3, length(k) - 11), 'UTF8') AS commune,
       ('x' || encode(substr(k, length(k) - 7), 'hex'))::BIT(64)::BIGINT AS seq,
       encode(v, 'hex')::UUID AS record_id
  FROM gesync.kv
 WHERE k >= 'f/'::BYTEA AND k < 'f0'::BYTEA AND length(k) >= 12 AND length(v) = 16;
COMMENT ON VIEW gesync.feed IS 'The change feed: each record once, at the place of its latest change in its commune''s feed (a phone pulls what moved after its cursor); gap-free, numbered under the store''s write lock';

CREATE VIEW gesync.sessions AS
SELECT s->>'username' AS username,
       s->>'device_id' AS device_id,
       to_timestamp((s->>'created_at')::BIGINT) AS created_at,
       to_timestamp((s->>'expires_at')::BIGINT) AS expires_at
  FROM (SELECT convert_from(v, 'UTF8')::JSONB AS s FROM gesync.kv WHERE k >= 'w/'::BYTEA AND k < 'w0'::BYTEA) AS w;
COMMENT ON VIEW gesync.sessions IS 'Web sessions (the staff pages), live or ended but not yet swept; a session also ends when its user is disabled or changed, or its device revoked';

CREATE VIEW gesync.refresh_tokens AS
SELECT t->>'family' AS family,
       t->>'username' AS username,
       t->>'device_id' AS device_id,
       to_timestamp((t->>'expires_at')::BIGINT) AS expires_at,
       (t->>'used')::BOOLEAN AS used,
       CASE WHEN COALESCE((t->>'used_at')::BIGINT, 0) > 0 THEN to_timestamp((t->>'used_at')::BIGINT) END AS used_at,
       EXISTS (SELECT 1 FROM gesync.kv f WHERE f.k = 'rf/'::BYTEA || convert_to(t->>'family', 'UTF8')) AS family_ended
  FROM (SELECT convert_from(v, 'UTF8')::JSONB AS t FROM gesync.kv WHERE k >= 'rt/'::BYTEA AND k < 'rt0'::BYTEA) AS r;
COMMENT ON VIEW gesync.refresh_tokens IS 'Refresh tokens (one family per login of a device; each use replaces the token with a new one of its family); a family ended by a logout, a revoke or a token used twice';

CREATE VIEW gesync.uploads AS
SELECT split_part(h.owner, '/', 1) AS username,
       substr(h.owner, length(split_part(h.owner, '/', 1)) + 2) AS device_id,
       CASE WHEN length(h.v) >= 16 THEN encode(substr(h.v, 1, 16), 'hex')::UUID END AS record_id,
       (SELECT count(*) FROM gesync.kv s
         WHERE s.k >= 'us/'::BYTEA || convert_to(h.owner, 'UTF8') || '/'::BYTEA
           AND s.k < 'us/'::BYTEA || convert_to(h.owner, 'UTF8') || '0'::BYTEA) AS slices,
       (SELECT COALESCE(sum(length(s.v)), 0) FROM gesync.kv s
         WHERE s.k >= 'us/'::BYTEA || convert_to(h.owner, 'UTF8') || '/'::BYTEA
           AND s.k < 'us/'::BYTEA || convert_to(h.owner, 'UTF8') || '0'::BYTEA) AS bytes_held
  FROM (SELECT convert_from(substr(k, 4), 'UTF8') AS owner, v FROM gesync.kv WHERE k >= 'up/'::BYTEA AND k < 'up0'::BYTEA) AS h;
COMMENT ON VIEW gesync.uploads IS 'Large records going up in slices, one upload per device, until whole (then pushed and forgotten) or expired';
