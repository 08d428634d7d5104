//! The org tree, roles and who may do what: the access policy, decided here and nowhere else.
//!
//! Every handler, page, the sync path and the CLI ask [`Principal`]'s methods, so one table
//! decides what each role may see and do.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The four roles of `domain.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    ProvinceStaff,
    DistrictStaff,
    CommuneOfficer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::ProvinceStaff, Role::DistrictStaff, Role::CommuneOfficer];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ProvinceStaff => "province_staff",
            Role::DistrictStaff => "district_staff",
            Role::CommuneOfficer => "commune_officer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            format!(
                "unknown role `{}`: use admin, province_staff, district_staff or commune_officer",
                s.chars().take(40).collect::<String>()
            )
        })
    }
}

/// One unit of the administrative tree. The level is data (`province`, `district`, `commune`),
/// so the tree may have any depth; records attach only to units of level `commune`.
///
/// A unit merged into another (`merged_into`, from the date `effective`) stays in the tree as
/// history: its records count for its successor, it has no children of its own any more (they
/// passed to the successor), and it is no longer part of the current map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgUnit {
    pub code: String,
    pub name: String,
    pub parent: Option<String>,
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// `YYYY-MM-DD`, set with `merged_into`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<String>,
}

impl OrgUnit {
    pub fn new(code: impl Into<String>, name: impl Into<String>, parent: Option<String>, level: impl Into<String>) -> Self {
        OrgUnit { code: code.into(), name: name.into(), parent, level: level.into(), merged_into: None, effective: None }
    }

    /// Whether the unit is on the current map (not merged into another).
    pub fn is_current(&self) -> bool {
        self.merged_into.is_none()
    }
}

pub const COMMUNE_LEVEL: &str = "commune";

/// The whole tree, held in memory (a province has a few hundred units).
///
/// Two views of it: the **current map** (`children`, `communes_under`: units not merged into
/// another), on which every figure is made; and the **record scope**
/// (`record_communes_under`), which adds every unit merged into one on the map, since their
/// records count for it. A unit's `chain` goes from a merged unit to its successor, so the
/// counters of a merged commune's records add up in the successor and its ancestors.
#[derive(Debug, Clone, Default)]
pub struct OrgTree {
    units: BTreeMap<String, OrgUnit>,
    /// Current children of each unit (merged units are nobody's child any more).
    children: BTreeMap<String, Vec<String>>,
    /// Units merged into each unit.
    predecessors: BTreeMap<String, Vec<String>>,
}

impl OrgTree {
    pub fn new(units: impl IntoIterator<Item = OrgUnit>) -> Self {
        let mut tree = OrgTree::default();
        for u in units {
            tree.units.insert(u.code.clone(), u);
        }
        for u in tree.units.values() {
            match (&u.merged_into, &u.parent) {
                (Some(successor), _) => tree.predecessors.entry(successor.clone()).or_default().push(u.code.clone()),
                (None, Some(p)) => tree.children.entry(p.clone()).or_default().push(u.code.clone()),
                (None, None) => {}
            }
        }
        tree
    }

    /// This tree with `changed` units added or replaced.
    pub fn with(&self, changed: impl IntoIterator<Item = OrgUnit>) -> OrgTree {
        let mut units = self.units.clone();
        for u in changed {
            units.insert(u.code.clone(), u);
        }
        OrgTree::new(units.into_values())
    }

    pub fn get(&self, code: &str) -> Option<&OrgUnit> {
        self.units.get(code)
    }

    pub fn all(&self) -> impl Iterator<Item = &OrgUnit> {
        self.units.values()
    }

    /// The current children of `code` (units merged into another are not listed).
    pub fn children(&self, code: &str) -> &[String] {
        self.children.get(code).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The units merged into `code`.
    pub fn predecessors(&self, code: &str) -> &[String] {
        self.predecessors.get(code).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The unit on the current map that `code` now is: itself, or the successor of its
    /// successor, and so on.
    pub fn current(&self, code: &str) -> Option<&OrgUnit> {
        self.chain(code).iter().find_map(|c| self.units.get(c).filter(|u| u.is_current()))
    }

    /// `code`, then its successor if it was merged, else its parent, ..., up to the root: the
    /// units whose figures a record of `code` counts in. Empty for an unknown code.
    pub fn chain(&self, code: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = self.units.get(code);
        while let Some(u) = cur {
            if out.contains(&u.code) {
                break; // a cycle can only come from a damaged store; never loop forever
            }
            out.push(u.code.clone());
            let next = u.merged_into.as_deref().or(u.parent.as_deref());
            cur = next.and_then(|p| self.units.get(p));
        }
        out
    }

    /// True when `code` is `ancestor` or lies under it.
    pub fn is_within(&self, code: &str, ancestor: &str) -> bool {
        self.chain(code).iter().any(|c| c == ancestor)
    }

    /// Every commune of the current map at or under `code`, in code order: the communes a
    /// report lists and `communes_news_compliant` counts.
    pub fn communes_under(&self, code: &str) -> Vec<String> {
        self.collect_communes(code, false)
    }

    /// Every commune whose records count under `code`: the current communes at or under it
    /// and every commune merged into one of them (or into `code`), in code order. The record
    /// scope of a user of `code`.
    pub fn record_communes_under(&self, code: &str) -> Vec<String> {
        self.collect_communes(code, true)
    }

    fn collect_communes(&self, code: &str, with_predecessors: bool) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![code.to_string()];
        while let Some(c) = stack.pop() {
            if !seen.insert(c.clone()) {
                continue;
            }
            if let Some(u) = self.units.get(&c) {
                if u.level == COMMUNE_LEVEL && (with_predecessors || u.is_current()) {
                    out.push(c.clone());
                }
            }
            stack.extend(self.children(&c).iter().cloned());
            if with_predecessors {
                stack.extend(self.predecessors(&c).iter().cloned());
            }
        }
        out.sort();
        out
    }

    /// Whether the current map still has a district level above `code`'s communes: pages say
    /// "huyện" only where one exists.
    pub fn has_districts(&self, code: &str) -> bool {
        let root = self.chain(code).last().cloned().unwrap_or_default();
        let mut stack = vec![root];
        while let Some(c) = stack.pop() {
            if self.units.get(&c).is_some_and(|u| u.level == "district") {
                return true;
            }
            stack.extend(self.children(&c).iter().cloned());
        }
        false
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub username: String,
    pub role: Role,
    pub org_unit: String,
    pub device_id: String,
}

impl Principal {
    /// Communes whose individual records this principal may read and change, and which its
    /// phone receives on sync. Province staff and admins see figures, not cases.
    pub fn record_communes(&self, tree: &OrgTree) -> Vec<String> {
        match self.role {
            Role::CommuneOfficer | Role::DistrictStaff => tree.record_communes_under(&self.org_unit),
            Role::ProvinceStaff | Role::Admin => Vec::new(),
        }
    }

    /// May this principal read or change individual records of `commune`?
    pub fn may_access_records_of(&self, tree: &OrgTree, commune: &str) -> bool {
        match self.role {
            Role::CommuneOfficer | Role::DistrictStaff => tree.is_within(commune, &self.org_unit),
            Role::ProvinceStaff | Role::Admin => false,
        }
    }

    /// May this principal read figures (indicators, reports) of `org_unit`?
    pub fn may_read_figures_of(&self, tree: &OrgTree, org_unit: &str) -> bool {
        match self.role {
            Role::Admin => tree.get(org_unit).is_some(),
            _ => tree.is_within(org_unit, &self.org_unit),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Does this role work with individual records at all? Officers and reviewers do; province
    /// staff and admins see figures, not cases.
    pub fn sees_records(&self) -> bool {
        matches!(self.role, Role::CommuneOfficer | Role::DistrictStaff)
    }

    /// Is this a reviewer (`district_staff`, at the level above communes), who resolves
    /// conflicts and duplicates and approves figures?
    pub fn is_reviewer(&self) -> bool {
        self.role == Role::DistrictStaff
    }

    /// May this principal review (conflicts, duplicates, approvals) the records under `unit`?
    pub fn may_review(&self, tree: &OrgTree, unit: &str) -> bool {
        self.is_reviewer() && tree.is_within(unit, &self.org_unit)
    }

    /// Are the staff pages for this role? Everyone's but a commune officer's, whose work is on
    /// the phone.
    pub fn uses_staff_pages(&self) -> bool {
        self.role != Role::CommuneOfficer
    }

    /// Is this principal's reading of records audited? Everyone's but the commune's own
    /// officers' (their phone holds the commune's records anyway).
    pub fn reads_are_audited(&self) -> bool {
        self.role != Role::CommuneOfficer
    }

    /// May this principal manage `org_unit` (its users and their devices, its targets, the
    /// units under it)? Admins only, and only inside their own unit's subtree: the admin of one
    /// province does not manage another's.
    pub fn may_administer(&self, tree: &OrgTree, org_unit: &str) -> bool {
        self.is_admin() && tree.is_within(org_unit, &self.org_unit)
    }
}

impl Role {
    /// Whether a user of this role may be assigned to `unit`: a commune officer to a commune,
    /// district staff to the level right above communes (a district, or a province whose
    /// communes hang directly under it since 2025), province staff to a province, an admin to
    /// any unit. A role on the wrong level would widen its scope (an officer given a province
    /// code would sync the whole province).
    pub fn fits(self, tree: &OrgTree, unit: &OrgUnit) -> bool {
        let has_communes = || tree.children(&unit.code).iter().any(|c| tree.get(c).is_some_and(|u| u.level == COMMUNE_LEVEL));
        match self {
            Role::Admin => true,
            Role::ProvinceStaff => unit.level == "province",
            Role::DistrictStaff => unit.level == "district" || (unit.level == "province" && has_communes()),
            Role::CommuneOfficer => unit.level == COMMUNE_LEVEL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(code: &str, parent: Option<&str>, level: &str) -> OrgUnit {
        OrgUnit::new(code, code, parent.map(Into::into), level)
    }

    pub(crate) fn tree() -> OrgTree {
        OrgTree::new([
            unit("04", None, "province"),
            unit("047", Some("04"), "district"),
            unit("01234", Some("047"), "commune"),
            unit("01235", Some("047"), "commune"),
            unit("048", Some("04"), "district"),
            unit("01300", Some("048"), "commune"),
            // After the 2025 reform a commune may hang directly under the province.
            unit("01400", Some("04"), "commune"),
        ])
    }

    #[test]
    fn chains_and_communes_at_any_depth() {
        let t = tree();
        assert_eq!(t.chain("01234"), ["01234", "047", "04"]);
        assert_eq!(t.communes_under("047"), ["01234", "01235"]);
        assert_eq!(t.communes_under("04"), ["01234", "01235", "01300", "01400"]);
        assert_eq!(t.communes_under("01400"), ["01400"]);
        assert!(t.chain("99").is_empty());
    }

    #[test]
    fn a_merged_unit_counts_for_its_successor_and_leaves_the_current_map() {
        let merged = |code: &str, into: &str| OrgUnit { merged_into: Some(into.into()), effective: Some("2025-07-01".into()), ..tree().get(code).unwrap().clone() };
        // 01234 and 01235 become 01400; district 047 is abolished into the province.
        let t = tree().with([merged("01234", "01400"), merged("01235", "01400"), merged("047", "04")]);
        assert_eq!(t.chain("01234"), ["01234", "01400", "04"], "a merged commune's records count for its successor");
        assert_eq!(t.current("01234").unwrap().code, "01400");
        assert_eq!(t.communes_under("04"), ["01300", "01400"], "the current map");
        assert_eq!(t.record_communes_under("04"), ["01234", "01235", "01300", "01400"]);
        assert_eq!(t.record_communes_under("01400"), ["01234", "01235", "01400"], "the successor's scope holds its predecessors");
        assert!(t.communes_under("047").is_empty() && t.chain("047") == ["047", "04"]);
        assert!(!t.children("04").contains(&"047".to_string()));
        let officer = Principal { username: "u".into(), role: Role::CommuneOfficer, org_unit: "01400".into(), device_id: "d".into() };
        assert!(officer.may_access_records_of(&t, "01234"));
        assert!(!officer.may_access_records_of(&t, "01300"));
    }

    #[test]
    fn scopes_by_role() {
        let t = tree();
        let p = |role, ou: &str| Principal { username: "u".into(), role, org_unit: ou.into(), device_id: "d".into() };
        let officer = p(Role::CommuneOfficer, "01234");
        assert!(officer.may_access_records_of(&t, "01234"));
        assert!(!officer.may_access_records_of(&t, "01235"));
        let district = p(Role::DistrictStaff, "047");
        assert!(district.may_access_records_of(&t, "01235"));
        assert!(!district.may_access_records_of(&t, "01300"));
        let province = p(Role::ProvinceStaff, "04");
        assert!(!province.may_access_records_of(&t, "01234"));
        assert!(province.may_read_figures_of(&t, "047"));
        assert!(!district.may_read_figures_of(&t, "04"));
        assert!(p(Role::Admin, "04").record_communes(&t).is_empty());
    }

    /// The policy, one table: what each role may do, and the device rule.
    #[test]
    fn the_policy_table() {
        let t = tree();
        let p = |role, ou: &str| Principal { username: "u".into(), role, org_unit: ou.into(), device_id: "d".into() };
        // (principal, sees records, reviewer, staff pages, reads audited)
        for (who, records, reviewer, staff, audited) in [
            (p(Role::CommuneOfficer, "01234"), true, false, false, false),
            (p(Role::DistrictStaff, "047"), true, true, true, true),
            (p(Role::ProvinceStaff, "04"), false, false, true, true),
            (p(Role::Admin, "04"), false, false, true, true),
        ] {
            assert_eq!((who.sees_records(), who.is_reviewer(), who.uses_staff_pages(), who.reads_are_audited()), (records, reviewer, staff, audited), "{:?}", who.role);
        }
        let reviewer = p(Role::DistrictStaff, "047");
        assert!(reviewer.may_review(&t, "047") && reviewer.may_review(&t, "01235"));
        assert!(!reviewer.may_review(&t, "048") && !reviewer.may_review(&t, "04"));
        assert!(!p(Role::ProvinceStaff, "04").may_review(&t, "047"));
    }

    #[test]
    fn admins_manage_their_subtree_and_roles_fit_levels() {
        let t = tree();
        let admin = Principal { username: "a".into(), role: Role::Admin, org_unit: "047".into(), device_id: "d".into() };
        assert!(admin.may_administer(&t, "047") && admin.may_administer(&t, "01234"));
        assert!(!admin.may_administer(&t, "048") && !admin.may_administer(&t, "04"));
        let unit = |c: &str| t.get(c).unwrap().clone();
        assert!(Role::CommuneOfficer.fits(&t, &unit("01234")));
        assert!(!Role::CommuneOfficer.fits(&t, &unit("04")), "an officer on a province would sync all of it");
        assert!(Role::DistrictStaff.fits(&t, &unit("047")));
        assert!(Role::DistrictStaff.fits(&t, &unit("04")), "04 has a commune right under it (two-level map)");
        assert!(!Role::DistrictStaff.fits(&t, &unit("01234")));
        assert!(Role::ProvinceStaff.fits(&t, &unit("04")) && !Role::ProvinceStaff.fits(&t, &unit("047")));
    }
}
