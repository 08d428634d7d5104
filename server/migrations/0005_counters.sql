-- gesync schema, step 5: the server's counters in long format, one row per (org unit, quarter,
-- counter), as an analyst reads DHIS2's data values.
--
-- A view, not a table: it reads the counters the server keeps in the keyspace
-- ('c/{unit}/{quarter}' -> JSON object of counter -> value, kept in the same transaction as
-- every record change), so it is always exactly what the figures are made of and costs the
-- write path nothing. (A table kept by a trigger would rewrite a few hundred rows under the
-- write lock for every record written: each change moves its commune's, district's and
-- province's counters.)
--
-- A counter's name is `{indicator}.{num|den}` for a rate's numerator or denominator, followed
-- by `.sex.{female|male}`, `.age.{band}` or `.ethnic.{yes|no}` for a breakdown, or
-- `news_items`. Names are stable across versions. Units are every unit that has counted
-- something, merged ones included: a merged commune keeps the counters of its own records, which
-- count for its successor too (v_figures shows today's map only).

CREATE VIEW gesync.v_counters AS
SELECT c.org_unit,
       c.period,
       split_part(e.key, '.', 1) AS indicator,
       NULLIF(split_part(e.key, '.', 2), '') AS side,        -- 'num', 'den'; NULL for news_items
       NULLIF(split_part(e.key, '.', 3), '') AS breakdown,   -- 'sex', 'age', 'ethnic'; NULL: the total
       NULLIF(split_part(e.key, '.', 4), '') AS category,
       e.key AS counter,
       e.value::BIGINT AS value
  FROM (SELECT split_part(convert_from(substr(k, 3), 'UTF8'), '/', 1) AS org_unit,
               split_part(convert_from(substr(k, 3), 'UTF8'), '/', 2) AS period,
               convert_from(v, 'UTF8')::JSONB AS counters
          FROM gesync.kv
         WHERE k >= 'c/'::BYTEA AND k < 'c0'::BYTEA) AS c
 CROSS JOIN LATERAL jsonb_each_text(c.counters) AS e
 WHERE e.value::BIGINT <> 0;
COMMENT ON VIEW gesync.v_counters IS 'The server''s counters per org unit and quarter (period ''2025Q3''), one row per counter, breakdowns by sex, age band and ethnic minority included: what v_figures and GET /api/v1/indicators are made of';

GRANT SELECT ON gesync.v_counters TO gesync_reporting;
