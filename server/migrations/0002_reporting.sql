-- gesync schema, step 2: tables a DBA can read, and read-only views for reporting.
--
-- The tables below hold, in columns, what the keyspace (`gesync.kv`) holds as bytes: the org
-- tree with its merges, the targets, and one row per record (its kind, commune, dates, what it
-- adds to the figures, its de-identified facts; never its document or any free text). The
-- database keeps them itself: a trigger on `gesync.kv` rewrites the affected row in the same
-- transaction as every change to the keyspace, so they are never behind it, on any replica,
-- whatever wrote the change (a sync, a merge, a restore, `admin rebuild-figures`). Nobody
-- writes them by hand. The trigger reads small JSON values only (a record's reporting row is
-- written for it, beside its document): the write path, which holds the write lock, pays little.
--
-- `v_figures` and `v_records` are what a statistician reads; the role `gesync_reporting` may
-- read those two views and nothing else.

CREATE TABLE gesync.org_units (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    parent      TEXT,
    level       TEXT NOT NULL,            -- 'province', 'district', 'commune', ...
    merged_into TEXT,                     -- set when merged: the unit is then history
    merged_on   DATE
);
COMMENT ON TABLE gesync.org_units IS 'The org-unit tree, merged units included (merged_into, merged_on); today''s map is the units with merged_into IS NULL';

CREATE TABLE gesync.targets (
    org_unit       TEXT NOT NULL,
    indicator      TEXT NOT NULL,
    milestone_year INT NOT NULL,
    target         DOUBLE PRECISION NOT NULL,   -- a fraction: 0.8 is 80%
    PRIMARY KEY (org_unit, indicator, milestone_year)
);
COMMENT ON TABLE gesync.targets IS 'Targets set on a unit (inherited below it unless set lower down); the strategy''s values are gesync.default_targets';

CREATE TABLE gesync.default_targets (
    indicator      TEXT NOT NULL,
    milestone_year INT NOT NULL,
    target         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (indicator, milestone_year)
);
INSERT INTO gesync.default_targets VALUES
    ('gbv_victims_supported', 2025, 0.8), ('gbv_victims_supported', 2030, 0.9),
    ('perpetrators_counselled', 2025, 0.5), ('perpetrators_counselled', 2030, 0.7),
    ('trafficking_returnees_supported', 2025, 1.0), ('trafficking_returnees_supported', 2030, 1.0),
    ('communes_news_compliant', 2025, 1.0), ('communes_news_compliant', 2030, 1.0);

CREATE TABLE gesync.records (
    id          UUID PRIMARY KEY,
    kind        TEXT NOT NULL,            -- 'gbv_case', 'trafficking_returnee', 'news_item'
    commune     TEXT NOT NULL,            -- where it was recorded (fixed at creation)
    record_date DATE,                     -- detected_on, identified_on or published_on
    quarter     TEXT,                     -- '2025Q3', the quarter it counts in (NULL: nowhere)
    deleted     BOOLEAN NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    counts      JSONB NOT NULL,           -- what it adds: {"gbv_victims_supported.num": 1, ...}
    facts       JSONB                     -- de-identified: no names, notes, providers, titles
);
CREATE INDEX records_by_commune ON gesync.records (commune, record_date);
COMMENT ON TABLE gesync.records IS 'One row per record: its metadata, what it adds to the figures, its de-identified facts (the document itself stays in gesync.kv)';

-- Rewrites the rows that one keyspace entry stands for (`val` NULL: the entry was removed).
-- Keys: 'o/{code}' an org unit (JSON); 't/{unit}/{indicator}' a target (JSON year -> fraction);
-- 'fx/' + 16 bytes a record's reporting row (JSON, see sync-core/src/facts.rs). A key of
-- another form under these prefixes is not the server's and is left alone.
CREATE FUNCTION gesync.project(key BYTEA, val BYTEA) RETURNS VOID
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
            INSERT INTO gesync.records
            VALUES (rid, doc->>'kind', doc->>'commune', (doc->>'date')::DATE, doc->>'quarter',
                    COALESCE((doc->>'deleted')::BOOLEAN, false), to_timestamp((doc->>'updated_at')::BIGINT),
                    COALESCE(doc->'counts', '{}'::JSONB), NULLIF(doc->'facts', 'null'::JSONB))
            ON CONFLICT (id) DO UPDATE
               SET kind = EXCLUDED.kind, commune = EXCLUDED.commune, record_date = EXCLUDED.record_date,
                   quarter = EXCLUDED.quarter, deleted = EXCLUDED.deleted, updated_at = EXCLUDED.updated_at,
                   counts = EXCLUDED.counts, facts = EXCLUDED.facts;
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
    END IF;
END
$$;
REVOKE ALL ON FUNCTION gesync.project(BYTEA, BYTEA) FROM PUBLIC;

CREATE FUNCTION gesync.project_kv() RETURNS TRIGGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, gesync AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM gesync.project(OLD.k, NULL);
    ELSE
        PERFORM gesync.project(NEW.k, NEW.v);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION gesync.project_kv() FROM PUBLIC;

-- Only the three families of keys above: the trigger costs nothing on the others (the feed,
-- documents, counters, accounts, audit).
CREATE TRIGGER kv_projects AFTER INSERT OR UPDATE ON gesync.kv
    FOR EACH ROW
    WHEN (substr(NEW.k, 1, 2) IN ('o/'::BYTEA, 't/'::BYTEA) OR substr(NEW.k, 1, 3) = 'fx/'::BYTEA)
    EXECUTE FUNCTION gesync.project_kv();
CREATE TRIGGER kv_projects_removal AFTER DELETE ON gesync.kv
    FOR EACH ROW
    WHEN (substr(OLD.k, 1, 2) IN ('o/'::BYTEA, 't/'::BYTEA) OR substr(OLD.k, 1, 3) = 'fx/'::BYTEA)
    EXECUTE FUNCTION gesync.project_kv();

-- What the keyspace already holds (a store from before this step).
-- (Records stored before their reporting rows were kept have none yet: `gesync-server migrate`
-- writes them, from the documents, right after this step.)
SELECT gesync.project(k, v) FROM gesync.kv
 WHERE substr(k, 1, 2) IN ('o/'::BYTEA, 't/'::BYTEA) OR substr(k, 1, 3) = 'fx/'::BYTEA;

-- The figures of every unit on today's map, for every period (quarters, half-years and the year)
-- of every year with something counted: the numbers of `GET /api/v1/indicators`. A rate's
-- value is numerator / denominator when the denominator is not 0 (none otherwise); the target
-- is a fraction (0.8 is 80%) in force for the period's year on the unit's chain.
CREATE VIEW gesync.v_figures AS
WITH RECURSIVE
units AS (
    SELECT code, level FROM gesync.org_units WHERE merged_into IS NULL
),
-- Every unit (merged ones too), and each unit its records count in: itself, then its
-- successor if it was merged, else its parent, up to the root (itself at depth 0).
up (unit, ancestor, depth) AS (
    SELECT code, code, 0 FROM gesync.org_units
    UNION ALL
    SELECT up.unit, COALESCE(o.merged_into, o.parent), up.depth + 1
      FROM up JOIN gesync.org_units o ON o.code = up.ancestor
     WHERE COALESCE(o.merged_into, o.parent) IS NOT NULL AND up.depth < 64
),
-- What the records add, per unit and quarter: the server's materialised counters, remade.
counted AS (
    SELECT up.ancestor AS org_unit, left(r.quarter, 4)::INT AS year, right(r.quarter, 1)::INT AS quarter,
           e.key AS counter, SUM(e.value::BIGINT) AS value
      FROM gesync.records r
     CROSS JOIN LATERAL jsonb_each_text(r.counts) AS e
      JOIN up ON up.unit = r.commune
     WHERE r.quarter IS NOT NULL
     GROUP BY 1, 2, 3, 4
),
periods (period, year, quarters) AS (
    SELECT y.year || p.suffix, y.year, p.quarters
      FROM (SELECT DISTINCT year FROM counted) AS y
     CROSS JOIN (VALUES ('Q1', ARRAY[1]), ('Q2', ARRAY[2]), ('Q3', ARRAY[3]), ('Q4', ARRAY[4]),
                        ('S1', ARRAY[1, 2]), ('S2', ARRAY[3, 4]), ('', ARRAY[1, 2, 3, 4])) AS p (suffix, quarters)
),
rate_ids (indicator) AS (
    VALUES ('gbv_victims_supported'), ('perpetrators_counselled'), ('trafficking_returnees_supported')
),
rates AS (
    SELECT u.code AS org_unit, p.period, p.year, i.indicator,
           COALESCE(SUM(c.value) FILTER (WHERE c.counter = i.indicator || '.num'), 0)::BIGINT AS numerator,
           COALESCE(SUM(c.value) FILTER (WHERE c.counter = i.indicator || '.den'), 0)::BIGINT AS denominator
      FROM units u CROSS JOIN periods p CROSS JOIN rate_ids i
      LEFT JOIN counted c
             ON c.org_unit = u.code AND c.year = p.year AND c.quarter = ANY (p.quarters)
            AND c.counter IN (i.indicator || '.num', i.indicator || '.den')
     GROUP BY u.code, p.period, p.year, i.indicator
),
-- A commune is news-compliant for a period with at least 4 news items in every one of its quarters.
compliant AS (
    SELECT u.code AS commune, p.period,
           (SELECT count(*) FROM counted c
             WHERE c.org_unit = u.code AND c.year = p.year AND c.quarter = ANY (p.quarters)
               AND c.counter = 'news_items' AND c.value >= 4) = cardinality(p.quarters) AS ok
      FROM units u CROSS JOIN periods p
     WHERE u.level = 'commune'
),
news AS (
    SELECT u.code AS org_unit, p.period, p.year, 'communes_news_compliant'::TEXT AS indicator,
           count(cp.commune) FILTER (WHERE cp.ok) AS numerator,
           count(cp.commune) AS denominator
      FROM units u CROSS JOIN periods p
      LEFT JOIN up ON up.ancestor = u.code
      LEFT JOIN compliant cp ON cp.commune = up.unit AND cp.period = p.period
     GROUP BY u.code, p.period, p.year
),
figures AS (
    SELECT * FROM rates UNION ALL SELECT * FROM news
),
-- The nearest unit on each unit's chain that sets its own target for an indicator.
set_on AS (
    SELECT DISTINCT ON (up.unit, t.indicator) up.unit, t.indicator, up.ancestor
      FROM up JOIN (SELECT DISTINCT org_unit, indicator FROM gesync.targets) AS t ON t.org_unit = up.ancestor
     ORDER BY up.unit, t.indicator, up.depth
),
milestones AS (
    SELECT s.unit, s.indicator, array_agg(t.milestone_year ORDER BY t.milestone_year) AS years,
           array_agg(t.target ORDER BY t.milestone_year) AS targets
      FROM set_on s JOIN gesync.targets t ON t.org_unit = s.ancestor AND t.indicator = s.indicator
     GROUP BY s.unit, s.indicator
),
defaults AS (
    SELECT indicator, array_agg(milestone_year ORDER BY milestone_year) AS years,
           array_agg(target ORDER BY milestone_year) AS targets
      FROM gesync.default_targets GROUP BY indicator
)
SELECT f.org_unit, f.period, f.indicator, f.numerator, f.denominator,
       -- The first milestone year at or after the period's year, else the last one.
       COALESCE(
           (SELECT m.target FROM unnest(COALESCE(ms.years, d.years), COALESCE(ms.targets, d.targets)) AS m (year, target)
             WHERE m.year >= f.year ORDER BY m.year LIMIT 1),
           (SELECT m.target FROM unnest(COALESCE(ms.years, d.years), COALESCE(ms.targets, d.targets)) AS m (year, target)
             ORDER BY m.year DESC LIMIT 1)) AS target
  FROM figures f
  LEFT JOIN milestones ms ON ms.unit = f.org_unit AND ms.indicator = f.indicator
  LEFT JOIN defaults d ON d.indicator = f.indicator;
COMMENT ON VIEW gesync.v_figures IS 'Indicator figures of every unit on today''s map for every quarter, half-year and year with data: as GET /api/v1/indicators';

-- One row per record that is not deleted, de-identified: no names, notes, providers, titles or
-- other free text, no record id; a birth year only as a five-year band and an age band at the
-- record's date. `commune` is the commune on today's map (after merges) that the record counts
-- for; `recorded_in` the one it was made in.
CREATE VIEW gesync.v_records AS
WITH RECURSIVE
now_in (commune, current, depth) AS (
    SELECT code, code, 0 FROM gesync.org_units
    UNION ALL
    SELECT n.commune, o.merged_into, n.depth + 1
      FROM now_in n JOIN gesync.org_units o ON o.code = n.current
     WHERE o.merged_into IS NOT NULL AND n.depth < 64
),
current_unit AS (
    SELECT DISTINCT ON (commune) commune, current FROM now_in ORDER BY commune, depth DESC
)
SELECT r.kind,
       COALESCE(cu.current, r.commune) AS commune,
       r.commune AS recorded_in,
       r.record_date,
       extract(YEAR FROM r.record_date)::INT || 'Q' || extract(QUARTER FROM r.record_date)::INT AS quarter,
       COALESCE(f->'victim'->>'sex', f->>'sex') AS sex,
       COALESCE(f->'victim'->>'birth_year_band', f->>'birth_year_band') AS birth_year_band,
       COALESCE(f->'victim'->>'age_band', f->>'age_band', CASE WHEN r.kind = 'news_item' THEN NULL ELSE 'unknown' END) AS age_band,
       (f->'victim'->>'ethnic_minority')::BOOLEAN AS ethnic_minority,
       (f->'victim'->>'disability')::BOOLEAN AS disability,
       f->>'setting' AS setting,
       ARRAY(SELECT jsonb_array_elements_text(COALESCE(f->'violence_types', '[]'::JSONB))) AS violence_types,
       ARRAY(SELECT DISTINCT e->>'kind' FROM jsonb_array_elements(COALESCE(f->'services', f->'support', '[]'::JSONB)) AS e
              WHERE e->>'kind' IS NOT NULL ORDER BY 1) AS service_kinds,
       (SELECT min((e->>'provided_on')::DATE) FROM jsonb_array_elements(COALESCE(f->'services', f->'support', '[]'::JSONB)) AS e) AS first_service_on,
       COALESCE(f->'services', f->'support') AS services,
       (f->'perpetrator'->>'detected')::BOOLEAN AS perpetrator_detected,
       (f->'perpetrator'->>'prosecuted')::BOOLEAN AS perpetrator_prosecuted,
       (f->'perpetrator'->>'counselled')::BOOLEAN AS perpetrator_counselled,
       (f->'perpetrator'->>'counselled_on')::DATE AS perpetrator_counselled_on,
       (f->>'needs_support')::BOOLEAN AS needs_support,
       (f->>'reintegrated')::BOOLEAN AS reintegrated,
       f->>'status' AS status,
       f->>'channel' AS channel
  FROM gesync.records r
 CROSS JOIN LATERAL (SELECT COALESCE(r.facts, '{}'::JSONB) AS f) AS x
  LEFT JOIN current_unit cu ON cu.commune = r.commune
 WHERE NOT r.deleted;
COMMENT ON VIEW gesync.v_records IS 'Every record not deleted, de-identified (no free text, no ids, birth years as bands)';

-- The reporting role: reads the two views, nothing else (views read their tables with their
-- owner's rights). Roles belong to the whole PostgreSQL cluster: an owner who may not create
-- roles has a superuser run `CREATE ROLE gesync_reporting NOLOGIN;` and migrates again.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gesync_reporting') THEN
        CREATE ROLE gesync_reporting NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;   -- another database's migration made it just now
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'the role gesync_reporting does not exist and % may not create it: have a superuser run CREATE ROLE gesync_reporting NOLOGIN; then run migrate again', current_user;
END
$$;
GRANT USAGE ON SCHEMA gesync TO gesync_reporting;
GRANT SELECT ON gesync.v_figures, gesync.v_records TO gesync_reporting;
