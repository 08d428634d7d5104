//! Demo data: the org-unit tree of the seed plans' provinces, one account per role, and a few
//! hundred realistic records pushed through the real sync path.
//!
//! Cao Bằng is on today's map: its district Trùng Khánh (047) was abolished on 1 July 2025 and
//! its six communes merged into three new ones directly under the province; records made
//! before that keep their old commune codes and count for the new communes. The other provinces
//! keep the three-level tree of the seed plans.
//!
//! Province codes (04, 24, 45, 67) and the district codes 047 (Trùng Khánh) and 216 (Tân Yên)
//! are the General Statistics Office's. Every commune code, the district codes of Hướng Hóa and
//! Đắk Glong, and which old communes make up each new one are INVENTED for the demo (the names
//! are real).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sync_protocol::automerge::ActorId;
use sync_protocol::doc;
use sync_protocol::wire::{PushDoc, SyncRequest};
use sync_protocol::{heads_to_wire, RecordId, RecordKind};

use crate::auth::hash_password;
use crate::db::{Db, DbError};
use crate::model::{OrgUnit, Principal, Role, User};

/// (code, name, parent, level)
pub const TREE: &[(&str, &str, Option<&str>, &str)] = &[
    ("04", "Tỉnh Cao Bằng", None, "province"),
    ("047", "Huyện Trùng Khánh", Some("04"), "district"),
    ("04701", "Thị trấn Trùng Khánh", Some("047"), "commune"),
    ("04702", "Xã Đàm Thủy", Some("047"), "commune"),
    ("04703", "Xã Chí Viễn", Some("047"), "commune"),
    ("04704", "Xã Đình Phong", Some("047"), "commune"),
    ("04705", "Xã Ngọc Côn", Some("047"), "commune"),
    ("04706", "Xã Phong Nậm", Some("047"), "commune"),
    // The communes of Cao Bằng since 1 July 2025, directly under the province.
    ("04710", "Xã Trùng Khánh", Some("04"), "commune"),
    ("04711", "Xã Đàm Thủy", Some("04"), "commune"),
    ("04712", "Xã Đình Phong", Some("04"), "commune"),
    ("24", "Tỉnh Bắc Giang", None, "province"),
    ("216", "Huyện Tân Yên", Some("24"), "district"),
    ("21601", "Thị trấn Cao Thượng", Some("216"), "commune"),
    ("21602", "Xã Ngọc Thiện", Some("216"), "commune"),
    ("21603", "Xã Lam Cốt", Some("216"), "commune"),
    ("21604", "Xã Việt Lập", Some("216"), "commune"),
    ("21605", "Xã Liên Sơn", Some("216"), "commune"),
    ("45", "Tỉnh Quảng Trị", None, "province"),
    ("459", "Huyện Hướng Hóa", Some("45"), "district"),
    ("45901", "Thị trấn Khe Sanh", Some("459"), "commune"),
    ("45902", "Xã Hướng Phùng", Some("459"), "commune"),
    ("45903", "Xã Tân Hợp", Some("459"), "commune"),
    ("67", "Tỉnh Đắk Nông", None, "province"),
    ("679", "Huyện Đắk Glong", Some("67"), "district"),
    ("67901", "Xã Quảng Khê", Some("679"), "commune"),
    ("67902", "Xã Đắk Som", Some("679"), "commune"),
    ("67903", "Xã Quảng Sơn", Some("679"), "commune"),
];

/// Cao Bằng's reorganisation: (old unit, successor), all effective on [`REORGANISED_ON`].
pub const MERGES: &[(&str, &str)] = &[
    ("04701", "04710"),
    ("04703", "04710"),
    ("04702", "04711"),
    ("04706", "04711"),
    ("04704", "04712"),
    ("04705", "04712"),
    ("047", "04"),
];

pub const REORGANISED_ON: &str = "2025-07-01";

/// (username, password, role, org unit)
pub const ACCOUNTS: &[(&str, &str, Role, &str)] = &[
    ("admin", "demo-admin-2025", Role::Admin, "04"),
    ("tinh.caobang", "demo-tinh-2025", Role::ProvinceStaff, "04"),
    // Cao Bằng has no districts any more: its reviewer works at the province.
    ("ransoat.caobang", "demo-ransoat-2025", Role::DistrictStaff, "04"),
    ("huyen.tanyen", "demo-huyen-2025", Role::DistrictStaff, "216"),
    ("xa.damthuy", "demo-xa-2025", Role::CommuneOfficer, "04711"),
];

/// Seeds the demo data unless the store already has users. Returns whether it seeded.
pub fn seed(db: &Db) -> Result<bool, DbError> {
    if !db.accounts().list_users()?.is_empty() {
        return Ok(false);
    }
    for (code, name, parent, level) in TREE {
        db.org_units().put_org_unit(OrgUnit::new(*code, *name, parent.map(str::to_string), *level), None)?;
    }
    for (username, password, role, ou) in ACCOUNTS {
        let user = User { username: username.to_string(), role: *role, org_unit: ou.to_string(), password_hash: hash_password(password), disabled: false, session_epoch: 0 };
        db.accounts().put_user(&user, true, None)?;
    }
    let mut rng = StdRng::seed_from_u64(2025);
    let merged: Vec<&str> = MERGES.iter().map(|(old, _)| *old).collect();
    let before: Vec<(i32, u32)> = quarters_between((2024, 1), (2025, 2));
    let after: Vec<(i32, u32)> = quarters_between((2025, 3), (2026, 3));
    // Records of the old map, up to the reorganisation (and, for the other provinces, 2025).
    for (code, _, _, level) in TREE {
        if *level != "commune" || ["04710", "04711", "04712"].contains(code) {
            continue;
        }
        let quarters = if merged.contains(code) { before.clone() } else { quarters_between((2024, 1), (2025, 4)) };
        push_records(db, code, records_in(code, &mut rng, &quarters))?;
    }
    let effective = crate::model::parse_effective(REORGANISED_ON).map_err(DbError::Invalid)?;
    for (old, new) in MERGES {
        db.org_units().merge_org_unit(old, new, effective, crate::model::today(), None)?;
    }
    // The new communes' own records, and a phone that was not updated and still records under
    // the old code of Đàm Thủy after the reorganisation: accepted, and counted for 04711.
    for code in ["04710", "04711", "04712"] {
        push_records(db, code, records_in(code, &mut rng, &after))?;
    }
    push_records(db, "04702", records_in("04702", &mut rng, &[(2025, 3)]))?;
    Ok(true)
}

/// Pushes `records` of `commune` through the sync path, as one import device.
fn push_records(db: &Db, commune: &str, records: Vec<(RecordKind, Value)>) -> Result<(), DbError> {
    let province = db.tree().chain(commune).last().cloned().unwrap_or_default();
    let who = Principal { username: "demo-import".into(), role: Role::DistrictStaff, org_unit: province, device_id: format!("demo-{commune}") };
    let actor = ActorId::random();
    let mut push = Vec::new();
    for (kind, json) in records {
        let mut d = doc::new_record(kind, &json, actor.clone()).map_err(|e| DbError::Invalid(e.to_string()))?;
        push.push(PushDoc { id: RecordId::random(), changes: sync_protocol::doc::save_record(&mut d), heads: heads_to_wire(&d.get_heads()) });
    }
    db.records().sync(&who, &SyncRequest { push, ..Default::default() })?;
    Ok(())
}

/// Every quarter from `first` to `last`, both included.
fn quarters_between(first: (i32, u32), last: (i32, u32)) -> Vec<(i32, u32)> {
    let mut out = Vec::new();
    let mut q = first;
    while q <= last {
        out.push(q);
        q = if q.1 == 4 { (q.0 + 1, 1) } else { (q.0, q.1 + 1) };
    }
    out
}

/// A date in quarter `q` of `year`.
fn date(rng: &mut StdRng, (year, q): (i32, u32)) -> String {
    let m = (q - 1) * 3 + rng.gen_range(1..=3);
    let d = rng.gen_range(1..=28);
    format!("{year}-{m:02}-{d:02}")
}

/// Realistic records of one commune for 2024–2025.
pub fn records_for(commune: &str, rng: &mut StdRng) -> Vec<(RecordKind, Value)> {
    records_in(commune, rng, &quarters_between((2024, 1), (2025, 4)))
}

/// Realistic records of one commune dated in `quarters`.
pub fn records_in(commune: &str, rng: &mut StdRng, quarters: &[(i32, u32)]) -> Vec<(RecordKind, Value)> {
    let mut out = Vec::new();
    let services = ["health", "psychosocial", "legal_aid", "safe_shelter", "police_justice", "social_assistance"];
    let providers = ["Trạm y tế xã", "Công an xã", "Hội LHPN xã", "Trung tâm trợ giúp pháp lý tỉnh", "Địa chỉ tin cậy thôn"];
    for &quarter in quarters {
        for _ in 0..rng.gen_range(1..3) {
            let detected_on = date(rng, quarter);
            let n_services = if rng.gen_bool(0.8) { rng.gen_range(1..3) } else { 0 };
            let svc: Vec<Value> = (0..n_services)
                .map(|_| json!({"kind": services[rng.gen_range(0..services.len())], "provided_on": detected_on, "provider": providers[rng.gen_range(0..providers.len())]}))
                .collect();
            let detected = rng.gen_bool(0.7);
            let prosecuted = detected && rng.gen_bool(0.2);
            out.push((
                RecordKind::GbvCase,
                json!({
                    "commune": commune, "detected_on": detected_on,
                    "setting": if rng.gen_bool(0.85) { "domestic" } else { "other_gbv" },
                    "violence_types": if rng.gen_bool(0.5) { json!(["physical", "psychological"]) } else { json!(["economic"]) },
                    "victim": {"sex": if rng.gen_bool(0.88) { "female" } else { "male" }, "birth_year": rng.gen_range(1950..2012),
                               "ethnic_minority": rng.gen_bool(0.9), "disability": rng.gen_bool(0.05)},
                    "services": svc,
                    "perpetrator": {"detected": detected, "sex": "male", "prosecuted": prosecuted, "counselled": detected && !prosecuted && rng.gen_bool(0.6)},
                    "status": if rng.gen_bool(0.6) { "closed" } else { "open" },
                    "notes": "Dữ liệu mẫu (demo)."
                }),
            ));
        }
        if rng.gen_bool(0.3) {
            let identified_on = date(rng, quarter);
            let needs = rng.gen_bool(0.8);
            let support: Vec<Value> = if needs && rng.gen_bool(0.85) { vec![json!({"kind": "essential_needs", "provided_on": identified_on}), json!({"kind": "health", "provided_on": identified_on})] } else { vec![] };
            out.push((
                RecordKind::TraffickingReturnee,
                json!({"commune": commune, "identified_on": identified_on, "sex": "female", "birth_year": rng.gen_range(1985..2008),
                       "needs_support": needs, "support": support, "reintegrated": rng.gen_bool(0.5)}),
            ));
        }
        let channels = ["loudspeaker", "commune_website", "bulletin_board", "social_media"];
        // Most communes publish 4+ items a quarter; some fall short in a quarter.
        let n = if rng.gen_bool(0.75) { rng.gen_range(4..7) } else { rng.gen_range(1..4) };
        for _ in 0..n {
            out.push((
                RecordKind::NewsItem,
                json!({"commune": commune, "published_on": date(rng, quarter),
                       "channel": channels[rng.gen_range(0..channels.len())], "title": "Tuyên truyền phòng, chống bạo lực gia đình"}),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemKv;

    #[test]
    fn the_demo_is_on_todays_map_and_its_counters_equal_a_rebuild() {
        let db = Db::open(Box::new(MemKv::default())).unwrap();
        assert!(seed(&db).unwrap());
        let tree = db.tree();
        assert_eq!(tree.communes_under("04"), ["04710", "04711", "04712"], "Cao Bằng has three communes and no district");
        assert!(!tree.has_districts("04") && tree.has_districts("24"));
        // Each new commune's 2025 figures hold its predecessors' records (old codes) and its own.
        let gbv_2025 = |communes: &[&str]| -> i64 {
            let mut n = 0;
            for c in communes {
                for id in db.records().record_ids_of(c).unwrap() {
                    let m = db.records().get_meta(&id).unwrap().unwrap();
                    n += i64::from(m.kind == RecordKind::GbvCase && m.date.as_deref().is_some_and(|d| d.starts_with("2025")));
                }
            }
            n
        };
        let period: indicators::Period = "2025".parse().unwrap();
        let denominator = |unit: &str| db.figures().indicators(unit, period).unwrap().indicator(indicators::IndicatorId::GbvVictimsSupported).unwrap().denominator;
        for (new, olds) in [("04710", ["04701", "04703"]), ("04711", ["04702", "04706"]), ("04712", ["04704", "04705"])] {
            let all = [new, olds[0], olds[1]];
            assert!(gbv_2025(&olds) > 0 && gbv_2025(&[new]) > 0);
            assert_eq!(denominator(new), gbv_2025(&all), "{new}");
        }
        assert_eq!(denominator("04"), gbv_2025(&["04701", "04702", "04703", "04704", "04705", "04706", "04710", "04711", "04712"]));
        let incremental = db.figures().all_counters().unwrap();
        db.rebuild_figures().unwrap();
        assert_eq!(db.figures().all_counters().unwrap(), incremental, "the counters moved by the merges equal a rebuild");
    }
}
