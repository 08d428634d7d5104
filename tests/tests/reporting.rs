//! The PostgreSQL schema a province's DBA and statistician read (`gesync` schema, contract.md):
//! - after a seeded load on two replicas, with targets set on the tree and a commune merged,
//!   every row of `gesync.v_figures` equals `GET /api/v1/indicators`, and again after
//!   `admin rebuild-figures`; `gesync.v_records` holds every record not deleted and no free
//!   text; `v_counters` adds up to `v_figures`; the role `gesync_reporting` reads the views and
//!   nothing else;
//! - a database laid out before the schema (`public.gesync_kv`, records without facts) moves
//!   into it with `migrate`, losing nothing; a `serve` whose role may not change the schema
//!   says to run `migrate`, and runs once it has, with rights on two tables only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use client_sdk::{Client, FixedKey, RecordKind, StoreKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tests::{login_phone as login, seed_from_env, Api, ServerProcess, TestStore};

const BIN: &str = env!("CARGO_BIN_EXE_gesync-server-under-test");
/// Words every free-text field of the load carries: none may reach a reporting view.
const SECRET: &str = "BÍ-MẬT";

fn url_of(store: &TestStore) -> String {
    match store {
        TestStore::Postgres(u) => u.clone(),
        TestStore::Embedded(_) => unreachable!("these tests run on PostgreSQL"),
    }
}

/// `sql` through psql as the URL's role: its rows (fields split on `|`), or psql's error.
/// Rows as `psql` prints them, or its error.
type Rows = Result<Vec<Vec<String>>, String>;

fn psql(url: &str, sql: &str) -> Rows {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-AtqF", "|", "-c", sql])
        .output()
        .expect("psql (PostgreSQL's client, installed with the server by scripts/test.sh)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('|').map(str::to_string).collect()).collect())
}

fn psql_ok(url: &str, sql: &str) -> Vec<Vec<String>> {
    psql(url, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The same database as `url`, as another role.
fn as_role(url: &str, role: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (_, host_db) = rest.rsplit_once('@').unwrap();
    format!("{scheme}://{role}:{password}@{host_db}")
}

fn phone(dir: &Path, name: &str) -> Client {
    Client::open(dir.join(name), FixedKey(StoreKey::random())).unwrap()
}


async fn sync(c: &mut Client) {
    for _ in 0..50 {
        if let Ok(r) = c.sync(|_| {}).await {
            assert_eq!(r.rejected, 0, "nothing refused");
            if c.pending_count() == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the phone never finished syncing");
}

/// A random date in 2024 or 2025.
fn date(rng: &mut StdRng) -> String {
    format!("{}-{:02}-{:02}", rng.gen_range(2024..=2025), rng.gen_range(1..=12), rng.gen_range(1..=28))
}

/// Random records of `commune` on `p`, some deleted; returns how many are left undeleted.
fn make_records(p: &mut Client, rng: &mut StdRng, commune: &str, n: usize) -> usize {
    let mut kept = 0;
    for i in 0..n {
        let services: Vec<Value> = (0..rng.gen_range(0..3))
            .map(|_| json!({"kind": (["health", "legal_aid", "safe_shelter"][rng.gen_range(0..3)]), "provided_on": date(rng), "provider": format!("{SECRET} trạm y tế")}))
            .collect();
        let record = match rng.gen_range(0..3) {
            0 => (
                RecordKind::GbvCase,
                json!({"commune": commune, "detected_on": date(rng), "setting": "domestic", "violence_types": ["physical"],
                       "victim": {"sex": (["female", "male", "unknown"][rng.gen_range(0..3)]), "birth_year": rng.gen_range(1950..2015), "ethnic_minority": rng.gen_bool(0.5), "disability": rng.gen_bool(0.2)},
                       "services": services,
                       "perpetrator": {"detected": rng.gen_bool(0.8), "sex": "male", "prosecuted": rng.gen_bool(0.3), "counselled": rng.gen_bool(0.5)},
                       "notes": format!("{SECRET} ghi chú {i}")}),
            ),
            1 => (
                RecordKind::TraffickingReturnee,
                json!({"commune": commune, "identified_on": date(rng), "sex": "female", "birth_year": rng.gen_range(1970..2012),
                       "needs_support": rng.gen_bool(0.8), "support": services.iter().map(|s| json!({"kind": "health", "provided_on": s["provided_on"]})).collect::<Vec<_>>(),
                       "reintegrated": rng.gen_bool(0.5)}),
            ),
            _ => (RecordKind::NewsItem, json!({"commune": commune, "published_on": date(rng), "channel": "loudspeaker", "title": format!("{SECRET} tin {i}")})),
        };
        let id = p.create(record.0, &record.1).unwrap();
        if rng.gen_bool(0.1) {
            p.delete(id, &format!("{SECRET} nhập trùng")).unwrap();
        } else {
            kept += 1;
        }
    }
    kept
}

/// Four news items in every quarter of 2025: a commune that is news-compliant for the year.
fn make_compliant(p: &mut Client, commune: &str) -> usize {
    for month in [2, 5, 8, 11] {
        for day in 1..=4 {
            p.create(RecordKind::NewsItem, &json!({"commune": commune, "published_on": format!("2025-{month:02}-{day:02}"), "channel": "bulletin_board", "title": SECRET})).unwrap();
        }
    }
    16
}

/// Every row of `v_figures`: (unit, period, indicator) → (numerator, denominator, target).
type Figures = BTreeMap<(String, String, String), (i64, i64, Option<f64>)>;

fn view_figures(url: &str) -> Figures {
    psql_ok(url, "SELECT org_unit, period, indicator, numerator, denominator, target FROM gesync.v_figures")
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].clone(), r[2].clone()), (r[3].parse().unwrap(), r[4].parse().unwrap(), (!r[5].is_empty()).then(|| r[5].parse().unwrap()))))
        .collect()
}

/// What the API says for every (unit, period) of `rows`, in the same shape.
async fn api_figures(api: &Api, rows: &Figures) -> Figures {
    let mut out = Figures::new();
    let asked: BTreeSet<(String, String)> = rows.keys().map(|(u, p, _)| (u.clone(), p.clone())).collect();
    for (unit, period) in asked {
        let (s, body) = api.get(&format!("/api/v1/indicators?org_unit={unit}&period={period}")).await;
        assert_eq!(s, 200, "{unit} {period}: {body}");
        for v in body["indicators"].as_array().unwrap() {
            let key = (unit.clone(), period.clone(), v["id"].as_str().unwrap().to_string());
            out.insert(key, (v["numerator"].as_i64().unwrap(), v["denominator"].as_i64().unwrap(), v["target"].as_f64()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reporting_views_equal_the_api_and_the_reporting_role_reads_nothing_else() {
    let seed = seed_from_env("the_reporting_views_equal_the_api_and_the_reporting_role_reads_nothing_else");
    let mut rng = StdRng::seed_from_u64(seed);
    let store = TestStore::postgres();
    store.seed(0);
    let url = url_of(&store);
    let replicas = [ServerProcess::spawn_on(Path::new(BIN), &store), ServerProcess::spawn_on(Path::new(BIN), &store)];
    let dir = tempfile::tempdir().unwrap();

    // Phones of three communes, on either replica.
    let mut kept = 0;
    let mut phones = Vec::new();
    for (i, (user, commune)) in [("officer1", "04701"), ("officer2", "04702"), ("officer3", "04801")].into_iter().enumerate() {
        let mut p = phone(dir.path(), user);
        login(&mut p, &replicas[i % 2].url(), user).await;
        let n = rng.gen_range(25..45);
        kept += make_records(&mut p, &mut rng, commune, n);
        if commune != "04801" {
            kept += make_compliant(&mut p, commune);
        }
        sync(&mut p).await;
        phones.push(p);
    }
    // A conflict in 04801: officer3's two phones set a news item's channel apart, offline.
    let news = phones[2].create(RecordKind::NewsItem, &json!({"commune": "04801", "published_on": "2024-03-02", "channel": "bulletin_board", "title": SECRET})).unwrap();
    kept += 1;
    sync(&mut phones[2]).await;
    let mut second = phone(dir.path(), "officer3-b");
    login(&mut second, &replicas[1].url(), "officer3").await;
    sync(&mut second).await;
    phones[2].set(news, "channel", &json!("loudspeaker")).unwrap();
    second.set(news, "channel", &json!("social_media")).unwrap();
    sync(&mut phones[2]).await;
    sync(&mut second).await;

    // Targets on the tree, through one replica; a merge through the other; more records after.
    let admin1 = Api::login(&replicas[1].url(), "admin").await;
    assert_eq!(admin1.put("/api/v1/targets/047/gbv_victims_supported", json!({"2025": 0.75, "2030": 0.85})).await.0, 204);
    assert_eq!(admin1.put("/api/v1/targets/04/perpetrators_counselled", json!({"2024": 0.4, "2025": 0.6})).await.0, 204);
    let admin0 = Api::login(&replicas[0].url(), "admin").await;
    let (s, merged) = admin0.post("/api/v1/org-units/04702/merge", json!({"into": "04701", "effective": "2025-07-01"})).await;
    assert_eq!(s, 200, "{merged}");
    // The district approves its year on one replica; the records after may alter it.
    let district = Api::login(&replicas[1].url(), "district").await;
    for period in ["2024", "2025"] {
        let (s, approval) = district.post("/api/v1/approvals", json!({"org_unit": "047", "period": period})).await;
        assert_eq!(s, 201, "{approval}");
    }
    // Staff reading records is audited: enough reads for the audit chain's first signed checkpoint.
    for _ in 0..64 {
        assert_eq!(district.get("/api/v1/records?org_unit=047").await.0, 200);
    }
    kept += make_records(&mut phones[0], &mut rng, "04701", 10);
    sync(&mut phones[0]).await;

    // Every row of the view equals the API's figures; every unit on today's map has a row for
    // every period of both years.
    let rows = view_figures(&url);
    let units: BTreeSet<&str> = rows.keys().map(|(u, _, _)| u.as_str()).collect();
    assert_eq!(units, BTreeSet::from(["04", "047", "04701", "048", "04801", "04901"]), "today's map (04702 was merged)");
    let periods: BTreeSet<&str> = rows.keys().map(|(_, p, _)| p.as_str()).collect();
    let expected: BTreeSet<String> = [2024, 2025].iter().flat_map(|y| ["Q1", "Q2", "Q3", "Q4", "S1", "S2", ""].map(|s| format!("{y}{s}"))).collect();
    assert_eq!(periods, expected.iter().map(String::as_str).collect());
    assert_eq!(rows.len(), 6 * 14 * 4);
    let api = api_figures(&admin0, &rows).await;
    assert_eq!(rows, api, "v_figures against GET /api/v1/indicators (seed {seed})");
    // Not vacuous: each indicator has something counted, a unit's own target and a merge show.
    for ind in ["gbv_victims_supported", "perpetrators_counselled", "trafficking_returnees_supported", "communes_news_compliant"] {
        assert!(rows.iter().any(|((_, _, i), (n, d, _))| i == ind && *n > 0 && *d > 0), "{ind} counts nothing (seed {seed})");
    }
    assert_eq!(rows[&("04701".into(), "2025".into(), "gbv_victims_supported".into())].2, Some(0.75), "the district's own target");
    assert_eq!(rows[&("04".into(), "2024".into(), "perpetrators_counselled".into())].2, Some(0.4), "the province's own target");
    assert_eq!(rows[&("047".into(), "2025".into(), "communes_news_compliant".into())].0, 1, "04701 compliant, 04702 merged into it");

    // `admin rebuild-figures` recomputes the counters from the documents: the view follows.
    for r in replicas {
        r.kill();
    }
    let out = tests::run_cli(Path::new(BIN), &["admin", "rebuild-figures", "--database", &url], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(view_figures(&url), rows, "v_figures after a rebuild");

    // v_counters: the counters the figures are made of, one row each. Its totals are the
    // quarters' numerators and denominators of v_figures (so of the API), and each breakdown's
    // categories add up to its total.
    let counters = psql_ok(&url, "SELECT org_unit, period, indicator, coalesce(side, ''), coalesce(breakdown, ''), coalesce(category, ''), value FROM gesync.v_counters");
    let mut totals: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
    let mut cuts: BTreeMap<(String, String, String, String, String), i64> = BTreeMap::new();
    for r in &counters {
        let value: i64 = r[6].parse().unwrap();
        let (unit, period, indicator, side, breakdown) = (r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone(), r[4].clone());
        assert!(value > 0, "{r:?}");
        if breakdown.is_empty() {
            let t = totals.entry((unit, period, indicator)).or_default();
            match side.as_str() {
                "num" => t.0 += value,
                "den" => t.1 += value,
                _ => assert_eq!(r[2], "news_items", "{r:?}"),
            }
        } else {
            *cuts.entry((unit, period, indicator, side, breakdown)).or_default() += value;
        }
    }
    for ((unit, period, indicator), (num, den)) in &totals {
        if indicator == "news_items" || !units.contains(unit.as_str()) {
            continue;
        }
        let (n, d, _) = *rows.get(&(unit.clone(), period.clone(), indicator.clone())).unwrap_or_else(|| panic!("v_counters has {unit} {period} {indicator}, v_figures does not"));
        assert_eq!((n, d), (*num, *den), "v_counters against v_figures for {unit} {period} {indicator}");
    }
    let quarters_counted = rows.iter().filter(|((_, p, i), (n, d, _))| p.contains('Q') && i != "communes_news_compliant" && (*n, *d) != (0, 0)).count();
    assert_eq!(
        totals.keys().filter(|(u, _, i)| i != "news_items" && units.contains(u.as_str())).count(),
        quarters_counted,
        "a total for every quarter that counted something"
    );
    for ((unit, period, indicator, side, breakdown), sum) in &cuts {
        let (num, den) = totals[&(unit.clone(), period.clone(), indicator.clone())];
        let total = if side == "num" { num } else { den };
        if breakdown == "ethnic" {
            assert!(*sum <= total, "{unit} {period} {indicator}.{side}: ethnic {sum} > {total}");
        } else {
            assert_eq!(*sum, total, "{unit} {period} {indicator}.{side}: {breakdown} adds up to its total");
        }
    }
    assert!(cuts.keys().any(|k| k.4 == "sex") && cuts.keys().any(|k| k.4 == "age"), "breakdowns are there (seed {seed})");
    assert!(counters.iter().any(|r| r[0] == "04702"), "the merged commune keeps its own counters (they count for 04701 too)");

    // v_records: every record not deleted, de-identified, counted for today's commune.
    let records = psql_ok(&url, "SELECT row_to_json(v)::text FROM gesync.v_records v");
    assert_eq!(records.len(), kept);
    let text: String = records.iter().map(|r| r.join("|")).collect::<Vec<_>>().join("\n");
    assert!(!text.contains(SECRET), "free text reached v_records");
    let merged_rows = psql_ok(&url, "SELECT count(*) FROM gesync.v_records WHERE recorded_in = '04702' AND commune = '04701'");
    assert_ne!(merged_rows[0][0], "0", "04702's records count for 04701");
    let bands = psql_ok(&url, "SELECT count(*) FROM gesync.v_records WHERE kind = 'gbv_case' AND (birth_year_band IS NULL OR age_band IS NULL OR sex IS NULL)");
    assert_eq!(bands[0][0], "0", "every case has its sex and bands");

    // The tables of accounts, devices, the audit chain and each record's feed order: `check`
    // finds them row for row as the keyspace holds them, and names a row edited by hand.
    let check = || tests::run_cli(Path::new(BIN), &["check", "--database", &url], None);
    let out = check();
    assert!(out.status.success(), "check: {}", String::from_utf8_lossy(&out.stderr));
    let n = |sql: &str| psql_ok(&url, sql)[0][0].parse::<u64>().unwrap();
    assert_eq!(n("SELECT count(*) FROM gesync.accounts WHERE username IN ('officer1', 'officer2', 'officer3', 'admin')"), 4);
    assert!(n("SELECT count(*) FROM gesync.devices WHERE username = 'officer1'") >= 1);
    assert!(n("SELECT count(*) FROM gesync.audit WHERE action LIKE '%merge%' AND target LIKE '%04702%'") >= 1, "the merge is audited");
    assert_eq!(n("SELECT count(*) FROM gesync.approvals WHERE org_unit = '047' AND approved_by = 'district' AND figures ? 'indicators'"), 2);
    assert!(n("SELECT sum(changes_after) FROM gesync.approvals") > 0, "the records synced after the approvals altered them (seed {seed})");
    assert_eq!(
        psql_ok(&url, "SELECT commune, path, competing FROM gesync.conflicts"),
        vec![vec!["04801".to_string(), "channel".into(), "2".into()]],
        "the one open conflict, without its values"
    );
    assert!(n("SELECT count(*) FROM gesync.audit") >= 64);
    assert_eq!(n("SELECT count(*) FROM gesync.audit_checkpoints"), n("SELECT count(*) FROM gesync.audit") / 64, "a signed checkpoint every 64 entries");
    assert_eq!(n("SELECT count(*) FROM gesync.records WHERE feed_seq IS NULL"), 0);
    assert_eq!(
        n("SELECT count(*) FROM (SELECT commune, feed_seq FROM gesync.records GROUP BY 1, 2 HAVING count(*) > 1) d"),
        0,
        "each record at its own place in its commune's feed"
    );
    psql_ok(
        &url,
        "UPDATE gesync.accounts SET role = 'admin' WHERE username = 'officer3';
         UPDATE gesync.records SET feed_seq = feed_seq + 1000000 WHERE id = (SELECT id FROM gesync.records ORDER BY id LIMIT 1);
         DELETE FROM gesync.audit WHERE seq = 2;
         UPDATE gesync.approvals SET changes_after = changes_after + 1 WHERE period = '2025';
         DELETE FROM gesync.conflicts;
         UPDATE gesync.audit_checkpoints SET signature = 'forged' WHERE seq = 64;",
    );
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for named in ["gesync.accounts: the row for officer3 differs", "gesync.records: the row for", "gesync.audit: no row for 2,", "gesync.approvals: the row for 047/2025 differs", "gesync.conflicts: no row for", "gesync.audit_checkpoints: the row for 64 differs", "gesync.reproject()"] {
        assert!(stderr.contains(named), "check did not say `{named}`: {stderr}");
    }
    psql_ok(&url, "SELECT gesync.reproject()");
    let out = check();
    assert!(out.status.success(), "check after gesync.reproject(): {}", String::from_utf8_lossy(&out.stderr));

    // The reporting role reads the views and nothing else.
    let role = format!("stat_{}", seed % 1_000_000_007);
    psql_ok(&url, &format!("CREATE ROLE {role} LOGIN PASSWORD 'thong-ke-{seed}' IN ROLE gesync_reporting"));
    let stat = as_role(&url, &role, &format!("thong-ke-{seed}"));
    let reads = psql(&stat, "SELECT count(*) FROM gesync.v_figures");
    let records_read = psql(&stat, "SELECT count(*) FROM gesync.v_records");
    let counters_read = psql(&stat, "SELECT count(*) FROM gesync.v_counters");
    let refused: Vec<(&str, Rows)> = ["gesync.records", "gesync.kv", "gesync.targets", "gesync.org_units", "gesync.schema_migrations", "gesync.accounts", "gesync.devices", "gesync.audit", "gesync.approvals", "gesync.conflicts", "gesync.audit_checkpoints"]
        .into_iter()
        .map(|t| (t, psql(&stat, &format!("SELECT count(*) FROM {t}"))))
        .collect();
    let write = psql(&stat, "DELETE FROM gesync.kv");
    psql_ok(&url, &format!("DROP ROLE {role}"));
    assert_eq!(reads.unwrap()[0][0], rows.len().to_string());
    assert_eq!(records_read.unwrap()[0][0], kept.to_string());
    assert_eq!(counters_read.unwrap()[0][0], counters.len().to_string());
    for (table, r) in refused {
        assert!(r.as_ref().is_err_and(|e| e.contains("permission denied")), "{table}: {r:?}");
    }
    assert!(write.is_err_and(|e| e.contains("permission denied")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_the_schema_migrates_and_serve_needs_no_ddl_rights() {
    let store = TestStore::postgres();
    store.seed(0);
    let url = url_of(&store);
    let server = ServerProcess::spawn_on(Path::new(BIN), &store);
    let dir = tempfile::tempdir().unwrap();
    let mut p = phone(dir.path(), "a");
    login(&mut p, &server.url(), "officer1").await;
    let mut rng = StdRng::seed_from_u64(7);
    let kept = make_records(&mut p, &mut rng, "04701", 20) + make_compliant(&mut p, "04701");
    sync(&mut p).await;
    let before = (tests::server_views(&server.url(), "district", "047").await, Api::login(&server.url(), "district").await.get("/api/v1/indicators?org_unit=047&period=2025").await.1);
    server.kill();

    // The layout of the previous release: the keyspace in `public`, no schema, records from
    // before their documents and metadata were sealed and before reporting rows were kept.
    psql_ok(
        &url,
        "CREATE TABLE public.gesync_kv AS SELECT k, v FROM gesync.kv;
         ALTER TABLE public.gesync_kv ADD PRIMARY KEY (k);
         CREATE TABLE public.gesync_write_lock (id INT PRIMARY KEY); INSERT INTO public.gesync_write_lock VALUES (1);
         CREATE TABLE public.gesync_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         INSERT INTO public.gesync_migrations VALUES (1);
         UPDATE public.gesync_kv SET v = substr(v, 10) WHERE substr(k, 1, 2) IN ('m/'::BYTEA, 'r/'::BYTEA);
         DELETE FROM public.gesync_kv WHERE substr(k, 1, 3) = 'fx/'::BYTEA;
         DROP SCHEMA gesync CASCADE;",
    );

    // A runtime role with no DDL rights: `serve` refuses, naming `migrate`.
    let app = format!("gesync_app_{}", uuid::Uuid::new_v4().simple());
    psql_ok(&url, &format!("CREATE ROLE {app} LOGIN PASSWORD 'app-password'"));
    let app_url = as_role(&url, &app, "app-password");
    let out = Command::new(BIN).args(["serve", "--database", &app_url, "--listen", "127.0.0.1:9", "--plain-http"]).env("GESYNC_LOG", "warn").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("gesync-server migrate") && !stderr.contains("app-password"), "{stderr}");

    // The owner migrates: every step applied, every record's reporting row written.
    let out = tests::run_cli(Path::new(BIN), &["migrate", "--database", &url], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["applied"], json!((1..=gesync_server::store::pg::schema_version_needed()).collect::<Vec<_>>()));
    assert_eq!(gesync_server::store::pg::schema_version_needed(), 7);
    assert!(report["records_refreshed"].as_u64().unwrap() >= kept as u64, "{report}");
    assert_eq!(psql_ok(&url, "SELECT to_regclass('public.gesync_kv') IS NULL")[0][0], "t", "the old table moved");
    assert_eq!(psql_ok(&url, "SELECT count(*) FROM gesync.records WHERE facts IS NULL OR feed_seq IS NULL")[0][0], "0");
    assert_eq!(psql_ok(&url, "SELECT count(*) FROM gesync.v_records")[0][0], kept.to_string());
    let out = tests::run_cli(Path::new(BIN), &["check", "--database", &url], None);
    assert!(out.status.success(), "check after the migration: {}", String::from_utf8_lossy(&out.stderr));
    // Again: nothing left to do.
    let out = tests::run_cli(Path::new(BIN), &["migrate", "--database", &url], None);
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["applied"], json!([]));

    // The runtime role, with rights on the keyspace and the lock row only, now serves: syncs
    // write records (the reporting tables follow through the owner's trigger), nothing is lost.
    psql_ok(&url, &format!("GRANT USAGE ON SCHEMA gesync TO {app}; GRANT SELECT, INSERT, UPDATE, DELETE ON gesync.kv, gesync.write_lock TO {app}; GRANT SELECT ON gesync.schema_migrations TO {app}"));
    // `check` by that role reads what it may: the keyspace, not the tables for people.
    let out = tests::run_cli(Path::new(BIN), &["check", "--database", &app_url], None);
    assert!(out.status.success(), "check as the runtime role: {}", String::from_utf8_lossy(&out.stderr));
    let server = ServerProcess::spawn_on(Path::new(BIN), &TestStore::Postgres(app_url));
    let after = (tests::server_views(&server.url(), "district", "047").await, Api::login(&server.url(), "district").await.get("/api/v1/indicators?org_unit=047&period=2025").await.1);
    assert_eq!(after, before, "records and figures after the migration");
    let count = || psql_ok(&url, "SELECT count(*) FROM gesync.records")[0][0].parse::<usize>().unwrap();
    let stored = count();
    make_records(&mut p, &mut rng, "04701", 3);
    login(&mut p, &server.url(), "officer1").await;
    sync(&mut p).await;
    assert_eq!(count(), stored + 3, "the new records are in the reporting tables");
    server.kill();
    psql_ok(&url, &format!("REVOKE ALL ON ALL TABLES IN SCHEMA gesync FROM {app}; REVOKE ALL ON SCHEMA gesync FROM {app}; DROP ROLE {app}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_moves_to_postgres_with_its_reporting_rows() {
    let dir = tempfile::tempdir().unwrap();
    let sled = TestStore::Embedded(dir.path().join("server"));
    sled.seed(0);
    let server = ServerProcess::spawn_on(Path::new(BIN), &sled);
    let mut p = phone(dir.path(), "a");
    login(&mut p, &server.url(), "officer1").await;
    let kept = make_records(&mut p, &mut StdRng::seed_from_u64(11), "04701", 15) + make_compliant(&mut p, "04701");
    sync(&mut p).await;
    let figures = Api::login(&server.url(), "district").await.get("/api/v1/indicators?org_unit=047&period=2025").await.1;
    server.kill();
    // The embedded store keeps no reporting rows (nothing would read them).
    let rows = sled.with_db(|db| {
        db.kv().range(b"fx/", b"fx0", usize::MAX).unwrap().len()
    });
    assert_eq!(rows, 0);
    let file = dir.path().join("old.gsb");
    let data = dir.path().join("server").display().to_string();
    let out = tests::run_cli(Path::new(BIN), &["backup", "--data-dir", &data, "--out", &file.display().to_string()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let pg = TestStore::postgres();
    let url = url_of(&pg);
    let out = tests::run_cli(Path::new(BIN), &["restore", "--database", &url, "--from", &file.display().to_string()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(psql_ok(&url, "SELECT count(*) FROM gesync.v_records")[0][0], kept.to_string());
    let out = tests::run_cli(Path::new(BIN), &["check", "--database", &url], None);
    assert!(out.status.success(), "check after the move: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(psql_ok(&url, "SELECT count(*) FROM gesync.accounts WHERE username = 'officer1'")[0][0], "1");
    let server = ServerProcess::spawn_on(Path::new(BIN), &pg);
    let api = Api::login(&server.url(), "district").await;
    assert_eq!(api.get("/api/v1/indicators?org_unit=047&period=2025").await.1, figures, "figures after the move");
    let rows = view_figures(&url);
    let admin = Api::login(&server.url(), "admin").await;
    assert_eq!(rows, api_figures(&admin, &rows).await, "v_figures after the move");
    server.kill();
}

/// The views over the keyspace (migration 6) show what the server holds: every record's
/// document as Automerge reads it, the feed in each commune's order, the sessions, refresh
/// tokens and uploads as they start, move and end; none shows a secret, and the reporting role
/// reads none of them.
#[test]
fn documents_feed_sessions_tokens_uploads_and_actors_read_as_the_server_holds_them() {
    use gesync_server::model::{Principal, Role};
    use sync_protocol::wire::{PushDoc, PushPart, SyncRequest};
    use sync_protocol::{doc, heads_to_wire, RecordId};

    let seed = seed_from_env("documents_feed_sessions_tokens_uploads_and_actors_read_as_the_server_holds_them");
    let mut rng = StdRng::seed_from_u64(seed);
    let store = TestStore::postgres();
    store.seed(0);
    let url = url_of(&store);
    let officer = |user: &str, commune: &str, device: &str| Principal { username: user.into(), role: Role::CommuneOfficer, org_unit: commune.into(), device_id: device.into() };
    let news = |rng: &mut StdRng, commune: &str| {
        let on = format!("2025-0{}-1{}", rng.gen_range(1..10), rng.gen_range(0..10));
        let mut d = doc::new_record(RecordKind::NewsItem, &json!({"commune": commune, "published_on": on, "title": SECRET}), automerge::ActorId::random()).unwrap();
        PushDoc { id: RecordId::random(), changes: d.save(), heads: heads_to_wire(&d.get_heads()) }
    };
    let pushes: Vec<(Principal, Vec<PushDoc>)> = [("officer1", "04701"), ("officer2", "04702"), ("officer3", "04801")]
        .into_iter()
        .map(|(user, commune)| (officer(user, commune, "phone-1"), (0..rng.gen_range(3..9)).map(|_| news(&mut rng, commune)).collect()))
        .collect();
    // Records of three communes, one edited after; a web session and two device logins, one
    // token used and one family ended; half of a large record's upload.
    let (held, session_user, ended_family, uploading) = store.with_db(move |db| {
        for (who, push) in &pushes {
            let resp = db.records().sync(who, &SyncRequest { push: push.clone(), ..Default::default() }).unwrap();
            assert!(resp.results.iter().all(|r| r.outcome == sync_protocol::wire::PushOutcome::Accepted));
        }
        let first = &pushes[0].1[0];
        let mut d = db.records().load_doc(&first.id).unwrap().unwrap();
        doc::set_path(&mut d, "channel", &json!("loudspeaker")).unwrap();
        let edit = PushDoc { id: first.id, changes: d.save(), heads: heads_to_wire(&d.get_heads()) };
        db.records().sync(&pushes[0].0, &SyncRequest { push: vec![edit], ..Default::default() }).unwrap();
        let staff = Principal { username: "district".into(), role: Role::DistrictStaff, org_unit: "047".into(), device_id: "web-abc".into() };
        db.sessions().create(&staff, 0).unwrap();
        let (token, _) = db.refresh_tokens().issue_refresh("officer1", "phone-1", 0).unwrap();
        db.refresh_tokens().use_refresh(&token).unwrap().unwrap();
        let (_, family) = db.refresh_tokens().issue_refresh("officer2", "phone-1", 0).unwrap();
        db.refresh_tokens().revoke_refresh_family(&family).unwrap();
        let big = RecordId::random();
        let part = PushPart { id: big, offset: 0, total: 3_000, bytes: vec![7; 1_200], heads: vec![[9; 32]] };
        let resp = db.records().sync(&officer("officer3", "04801", "phone-2"), &SyncRequest { push_part: Some(part), ..Default::default() }).unwrap();
        assert_eq!(resp.uploaded.map(|u| u.have), Some(1_200));
        let big = uuid::Uuid::from_bytes(big.0).to_string();
        // What the server holds: each commune's records in feed order, and each document.
        let mut held = BTreeMap::new();
        for commune in ["04701", "04702", "04801"] {
            for id in db.records().record_ids_of(commune).unwrap() {
                let heads = db.records().load_doc(&id).unwrap().unwrap().get_heads();
                held.insert(uuid::Uuid::from_bytes(id.0).to_string(), (commune.to_string(), heads));
            }
        }
        (held, staff.username, family, big)
    });

    // Documents: one per record, each loading to the heads the server has; every change in it
    // made under an actor `gesync.actors` names, bound to the officer who pushed it.
    let documents = psql_ok(&url, "SELECT record_id, encode(document, 'hex') FROM gesync.documents ORDER BY record_id");
    assert_eq!(documents.len(), held.len(), "one document per record (seed {seed})");
    let actors: BTreeMap<String, (String, String)> = psql_ok(&url, "SELECT actor, username, device_id FROM gesync.actors").into_iter().map(|r| (r[0].clone(), (r[1].clone(), r[2].clone()))).collect();
    let pusher = |commune: &str| match commune {
        "04701" => "officer1",
        "04702" => "officer2",
        _ => "officer3",
    };
    let mut actors_seen = BTreeSet::new();
    for row in &documents {
        let bytes = (0..row[1].len()).step_by(2).map(|i| u8::from_str_radix(&row[1][i..i + 2], 16).unwrap()).collect::<Vec<u8>>();
        let mut doc = automerge::AutoCommit::load(&bytes).unwrap_or_else(|e| panic!("{}: {e}", row[0]));
        assert_eq!(doc.get_heads(), held[&row[0]].1, "{}: the document as the server holds it", row[0]);
        for change in doc.get_changes(&[]) {
            let actor = change.actor_id().to_hex_string();
            assert_eq!(actors.get(&actor), Some(&(pusher(&held[&row[0]].0).to_string(), "phone-1".to_string())), "{}: the actor of a change, and whose it is", row[0]);
            actors_seen.insert(actor);
        }
    }
    assert_eq!(actors_seen.len(), actors.len(), "the view names the actors of the documents' changes, and no other");
    assert_eq!(actors.len(), held.len() + 1, "one actor per record made, and the edit's own");
    // The feed: each record once, in its own commune, numbered in one sequence without repeats;
    // the edited record moved to the end of its commune's feed.
    let feed = psql_ok(&url, "SELECT commune, seq, record_id FROM gesync.feed ORDER BY commune, seq");
    assert_eq!(feed.iter().map(|r| (r[2].clone(), r[0].clone())).collect::<BTreeMap<_, _>>(), held.iter().map(|(id, (c, _))| (id.clone(), c.clone())).collect());
    let seqs: BTreeSet<u64> = feed.iter().map(|r| r[1].parse().unwrap()).collect();
    assert_eq!(seqs.len(), feed.len());
    let last_of_04701 = feed.iter().filter(|r| r[0] == "04701").last().unwrap();
    assert_eq!(psql_ok(&url, "SELECT max(seq) FROM gesync.feed")[0][0], last_of_04701[1], "the edit is the feed's latest change");
    assert_eq!(psql_ok(&url, &format!("SELECT feed_seq FROM gesync.records WHERE id = '{}'", last_of_04701[2]))[0][0], last_of_04701[1], "records.feed_seq agrees");
    // Sessions and tokens, with no secret in sight.
    assert_eq!(psql_ok(&url, "SELECT username, device_id, expires_at > created_at FROM gesync.sessions"), vec![vec![session_user, "web-abc".into(), "t".into()]]);
    let tokens = psql_ok(&url, "SELECT username, used, used_at IS NOT NULL, family_ended, family FROM gesync.refresh_tokens ORDER BY username, used DESC");
    let shape: Vec<Vec<&str>> = tokens.iter().map(|r| r[..4].iter().map(String::as_str).collect()).collect();
    assert_eq!(shape, [["officer1", "t", "t", "f"], ["officer1", "f", "f", "f"], ["officer2", "f", "f", "t"]]);
    assert_eq!(tokens[0][4], tokens[1][4], "the new token is of the used one's family");
    assert_eq!(tokens[2][4], ended_family);
    let all_text = psql_ok(&url, "SELECT row_to_json(s)::text FROM gesync.sessions s UNION ALL SELECT row_to_json(t)::text FROM gesync.refresh_tokens t").concat().join("\n");
    assert!(!all_text.contains("csrf") && !all_text.contains("successor") && !all_text.contains("hash"), "{all_text}");
    // The upload in progress.
    assert_eq!(psql_ok(&url, "SELECT username, device_id, record_id, slices, bytes_held FROM gesync.uploads"), vec![vec!["officer3".to_string(), "phone-2".into(), uploading, "1".into(), "1200".into()]]);

    // The reporting role reads none of them.
    let role = format!("stat_views_{}", seed % 1_000_000_007);
    psql_ok(&url, &format!("CREATE ROLE {role} LOGIN PASSWORD 'thong-ke-{seed}' IN ROLE gesync_reporting"));
    let stat = as_role(&url, &role, &format!("thong-ke-{seed}"));
    let refused: Vec<(&str, Rows)> = ["gesync.documents", "gesync.feed", "gesync.sessions", "gesync.refresh_tokens", "gesync.uploads", "gesync.actors"].into_iter().map(|v| (v, psql(&stat, &format!("SELECT count(*) FROM {v}")))).collect();
    psql_ok(&url, &format!("DROP ROLE {role}"));
    for (view, r) in refused {
        assert!(r.as_ref().is_err_and(|e| e.contains("permission denied")), "{view}: {r:?}");
    }
}
