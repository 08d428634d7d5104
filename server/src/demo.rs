//! Demo data: the org-unit tree of the seed plans' provinces, one account per role, and a few
//! hundred realistic records pushed through the real sync path.
//!
//! Province codes (04, 24, 45, 67) and the district codes 047 (Trùng Khánh) and 216 (Tân Yên)
//! are the General Statistics Office's. The commune codes, and the district codes of Hướng Hóa
//! and Đắk Glong, are INVENTED for the demo (the names are real).

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

/// (username, password, role, org unit)
pub const ACCOUNTS: &[(&str, &str, Role, &str)] = &[
    ("admin", "demo-admin-2025", Role::Admin, "04"),
    ("tinh.caobang", "demo-tinh-2025", Role::ProvinceStaff, "04"),
    ("huyen.trungkhanh", "demo-huyen-2025", Role::DistrictStaff, "047"),
    ("xa.damthuy", "demo-xa-2025", Role::CommuneOfficer, "04702"),
];

/// Seeds the demo data unless the store already has users. Returns whether it seeded.
pub fn seed(db: &Db) -> Result<bool, DbError> {
    if !db.list_users()?.is_empty() {
        return Ok(false);
    }
    for (code, name, parent, level) in TREE {
        db.put_org_unit(OrgUnit::new(*code, *name, parent.map(str::to_string), *level), None)?;
    }
    for (username, password, role, ou) in ACCOUNTS {
        let user = User { username: username.to_string(), role: *role, org_unit: ou.to_string(), password_hash: hash_password(password), disabled: false, session_epoch: 0 };
        db.put_user(&user, true, None)?;
    }
    let mut rng = StdRng::seed_from_u64(2025);
    let tree = db.tree();
    for (code, _, _, level) in TREE {
        if *level != "commune" {
            continue;
        }
        let district = tree.chain(code).get(1).cloned().unwrap_or_default();
        let who = Principal { username: "demo-import".into(), role: Role::DistrictStaff, org_unit: district, device_id: format!("demo-{code}") };
        let actor = ActorId::random();
        let mut push = Vec::new();
        for (kind, json) in records_for(code, &mut rng) {
            let mut d = doc::new_record(kind, &json, actor.clone()).map_err(|e| DbError::Invalid(e.to_string()))?;
            push.push(PushDoc { id: RecordId::random(), changes: sync_protocol::doc::save_record(&mut d), heads: heads_to_wire(&d.get_heads()) });
        }
        db.sync(&who, &SyncRequest { push, ..Default::default() })?;
    }
    Ok(true)
}

fn date(rng: &mut StdRng, year: i32) -> String {
    let m = rng.gen_range(1..=12);
    let d = rng.gen_range(1..=28);
    format!("{year}-{m:02}-{d:02}")
}

/// Realistic records of one commune for 2024–2025.
pub fn records_for(commune: &str, rng: &mut StdRng) -> Vec<(RecordKind, Value)> {
    let mut out = Vec::new();
    let services = ["health", "psychosocial", "legal_aid", "safe_shelter", "police_justice", "social_assistance"];
    let providers = ["Trạm y tế xã", "Công an xã", "Hội LHPN xã", "Trung tâm trợ giúp pháp lý tỉnh", "Địa chỉ tin cậy thôn"];
    for year in [2024, 2025] {
        for _ in 0..rng.gen_range(4..9) {
            let detected_on = date(rng, year);
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
        for _ in 0..rng.gen_range(0..3) {
            let identified_on = date(rng, year);
            let needs = rng.gen_bool(0.8);
            let support: Vec<Value> = if needs && rng.gen_bool(0.85) { vec![json!({"kind": "essential_needs", "provided_on": identified_on}), json!({"kind": "health", "provided_on": identified_on})] } else { vec![] };
            out.push((
                RecordKind::TraffickingReturnee,
                json!({"commune": commune, "identified_on": identified_on, "sex": "female", "birth_year": rng.gen_range(1985..2008),
                       "needs_support": needs, "support": support, "reintegrated": rng.gen_bool(0.5)}),
            ));
        }
        let channels = ["loudspeaker", "commune_website", "bulletin_board", "social_media"];
        for q in 0..4 {
            // Most communes publish 4+ items a quarter; some fall short in a quarter.
            let n = if rng.gen_bool(0.75) { rng.gen_range(4..7) } else { rng.gen_range(1..4) };
            for _ in 0..n {
                let m = q * 3 + rng.gen_range(1..=3);
                out.push((
                    RecordKind::NewsItem,
                    json!({"commune": commune, "published_on": format!("{year}-{m:02}-{:02}", rng.gen_range(1..=28)),
                           "channel": channels[rng.gen_range(0..channels.len())], "title": "Tuyên truyền phòng, chống bạo lực gia đình"}),
                ));
            }
        }
    }
    out
}
