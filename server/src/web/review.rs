//! Review pages, on the data layer's review functions (`crate::review`): the conflict
//! queue (competing values side by side, keep one or enter another), possible duplicates (two
//! records side by side: not a duplicate, or merge) and the approval of a period's figures.
//!
//! Only reviewers (role `district_staff`, on a district or a two-level province) review (the
//! data layer checks it again). The conflict page shows the conflicting field's values and
//! nothing else of the record; the duplicate page shows the two records without their notes.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use indicators::{IndicatorId, Period};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use sync_protocol::RecordId;

use super::district::cell;
use super::fmt;
use super::page::{blocking, csrf_field, page, Lang, Posted, Section, Web, WebError, WebResult};
use crate::api::Shared;
use crate::db::AuditEvent;
use crate::model::Principal;
use crate::review::Approval;

fn event(p: &Principal, action: &'static str, target: String) -> AuditEvent {
    AuditEvent { user: p.username.clone(), device_id: Some(p.device_id.clone()), action, target }
}

/// A path segment, percent-encoded (conflict ids hold a field path).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Review pages are the reviewers' (role `district_staff`).
fn require_reviewer(web: &Web) -> WebResult<()> {
    web.require_staff()?;
    if !web.p().is_reviewer() {
        return Err(WebError::forbidden().with_message((
            "Chỉ cán bộ rà soát cấp trên xã xử lý xung đột dữ liệu, hồ sơ trùng và phê duyệt số liệu.",
            "Only reviewers (the level above communes) resolve conflicts and duplicates and approve figures.",
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct ReviewQuery {
    unit: Option<String>,
    period: Option<String>,
    done: Option<String>,
}

fn done_notice(lang: Lang, done: Option<&str>) -> Markup {
    let text = match done {
        Some("resolved") => lang.t("Đã giải quyết xung đột. Điện thoại của cán bộ xã sẽ nhận giá trị này ở lần đồng bộ tới.", "The conflict was resolved. The officers' phones get the value at their next sync."),
        Some("dismissed") => lang.t("Đã đánh dấu: không phải hồ sơ trùng.", "Marked as not a duplicate."),
        Some("merged") => lang.t("Đã gộp hai hồ sơ. Hồ sơ còn lại được đánh dấu xoá với lý do “trùng”.", "The records were merged. The other one is marked deleted as a duplicate."),
        Some("approved") => lang.t("Đã phê duyệt số liệu.", "The figures were approved."),
        _ => return html! {},
    };
    html! { p.ok role="status" { (text) } }
}

// ---- how record fields read ------------------------------------------------------------------

/// A field path in words: "victim.sex" → "Nạn nhân · Giới tính", "services.0.provider" →
/// "Dịch vụ hỗ trợ 1 · Đơn vị cung cấp".
pub fn field_label(lang: Lang, path: &str) -> String {
    let word = |s: &str| -> String {
        let t = match s {
            "victim" => lang.t("Nạn nhân", "Victim"),
            "perpetrator" => lang.t("Người gây bạo lực", "Perpetrator"),
            "services" => lang.t("Dịch vụ hỗ trợ", "Support service"),
            "support" => lang.t("Hỗ trợ", "Support"),
            "sex" => lang.t("Giới tính", "Sex"),
            "birth_year" => lang.t("Năm sinh", "Birth year"),
            "ethnic_minority" => lang.t("Dân tộc thiểu số", "Ethnic minority"),
            "disability" => lang.t("Khuyết tật", "Disability"),
            "detected_on" => lang.t("Ngày phát hiện", "Detected on"),
            "identified_on" => lang.t("Ngày xác định", "Identified on"),
            "published_on" => lang.t("Ngày đăng", "Published on"),
            "setting" => lang.t("Loại bạo lực", "Setting"),
            "violence_types" => lang.t("Hình thức bạo lực", "Violence types"),
            "kind" => lang.t("Loại", "Kind"),
            "provided_on" => lang.t("Ngày hỗ trợ", "Provided on"),
            "provider" => lang.t("Đơn vị cung cấp", "Provider"),
            "detected" => lang.t("Đã xác định", "Detected"),
            "prosecuted" => lang.t("Bị truy cứu trách nhiệm hình sự", "Prosecuted"),
            "counselled" => lang.t("Được tư vấn, tham vấn", "Counselled"),
            "counselled_on" => lang.t("Ngày tư vấn", "Counselled on"),
            "status" => lang.t("Trạng thái", "Status"),
            "needs_support" => lang.t("Có nhu cầu hỗ trợ", "Needs support"),
            "reintegrated" => lang.t("Tái hòa nhập cộng đồng", "Reintegrated"),
            "channel" => lang.t("Kênh đăng", "Channel"),
            "title" => lang.t("Tiêu đề", "Title"),
            "commune" => lang.t("Xã", "Commune"),
            "deleted" => lang.t("Đã xoá", "Deleted"),
            "notes" => lang.t("Ghi chú", "Notes"),
            other => return other.to_string(),
        };
        t.to_string()
    };
    let mut out: Vec<String> = Vec::new();
    for part in path.split('.') {
        match part.parse::<usize>() {
            Ok(i) => {
                if let Some(last) = out.last_mut() {
                    *last = format!("{last} {}", i + 1);
                }
            }
            Err(_) => out.push(word(part)),
        }
    }
    out.join(" · ")
}

/// A value in words, with the stored value beside coded ones: "Nam (male)", "Có".
pub fn value_text(lang: Lang, v: &Value) -> String {
    match v {
        Value::Bool(b) => (if *b { lang.t("Có", "Yes") } else { lang.t("Không", "No") }).to_string(),
        Value::Null => "–".into(),
        Value::String(s) => {
            if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return fmt::date(lang, d);
            }
            let word = match s.as_str() {
                "female" => lang.t("Nữ", "Female"),
                "male" => lang.t("Nam", "Male"),
                "other" => lang.t("Khác", "Other"),
                "unknown" => lang.t("Không rõ", "Unknown"),
                "open" => lang.t("Đang xử lý", "Open"),
                "closed" => lang.t("Đã kết thúc", "Closed"),
                "domestic" => lang.t("Bạo lực gia đình", "Domestic violence"),
                "other_gbv" => lang.t("Bạo lực trên cơ sở giới khác", "Other gender-based violence"),
                "health" => lang.t("Y tế", "Health"),
                "psychosocial" => lang.t("Tâm lý - xã hội", "Psychosocial"),
                "legal_aid" => lang.t("Trợ giúp pháp lý", "Legal aid"),
                "safe_shelter" => lang.t("Nhà tạm lánh, địa chỉ tin cậy", "Safe shelter"),
                "police_justice" => lang.t("Công an, tư pháp", "Police and justice"),
                "social_assistance" => lang.t("Trợ giúp xã hội", "Social assistance"),
                _ => return s.clone(),
            };
            format!("{word} ({s})")
        }
        Value::Array(items) if items.is_empty() => "–".into(),
        Value::Array(items) => items.iter().map(|i| value_text(lang, i)).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn kind_name(lang: Lang, kind: &str) -> &'static str {
    match kind {
        "gbv_case" => lang.t("Người bị bạo lực", "Victim of violence"),
        "trafficking_returnee" => lang.t("Nạn nhân bị mua bán trở về", "Trafficking returnee"),
        "news_item" => lang.t("Tin, bài", "News item"),
        _ => lang.t("Hồ sơ", "Record"),
    }
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn at_text(lang: Lang, rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map(|t| fmt::datetime(lang, t.timestamp())).unwrap_or_else(|_| "–".into())
}

// ---- conflicts -------------------------------------------------------------------------------

/// `GET /review/conflicts?unit=`.
pub async fn conflicts(State(state): State<Shared>, web: Web, Query(q): Query<ReviewQuery>) -> WebResult {
    require_reviewer(&web)?;
    let unit = q.unit.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| web.p().org_unit.clone());
    let db = state.db.clone();
    let p = web.p().clone();
    let u2 = unit.clone();
    let list = blocking(move || {
        let list = db.review().conflicts_under(&p, &u2)?;
        let mut out = Vec::new();
        for c in list {
            let kind = c.record_id.parse::<RecordId>().ok().and_then(|id| db.records().get_meta(&id).ok().flatten()).map(|m| m.kind.as_str().to_string()).unwrap_or_default();
            out.push((c, kind));
        }
        db.audit_log().audit(event(&p, "conflicts_list", u2))?;
        Ok(out)
    })
    .await?;
    let tree = state.db.tree();
    let lang = web.lang;
    let body = html! {
        h1 { (web.t("Xung đột dữ liệu", "Data conflicts")) }
        (done_notice(lang, q.done.as_deref()))
        p.muted { (web.t(
            "Hai cán bộ đã sửa cùng một thông tin của một hồ sơ khi chưa đồng bộ. Hãy chọn giá trị đúng, hoặc nhập giá trị khác; điện thoại của cán bộ xã sẽ nhận kết quả ở lần đồng bộ tới.",
            "Two officers changed the same item of a record before syncing. Keep the right value or enter another; the officers' phones get it at their next sync.")) }
        @if list.is_empty() {
            p.card { (web.t("Không có xung đột nào cần xử lý.", "There is no conflict to resolve.")) }
        }
        @for (c, kind) in &list {
            section.card.conflict data-conflict=(c.id) {
                h2 { (field_label(lang, &c.path)) }
                p.muted {
                    (kind_name(lang, kind)) " · " (tree.get(&c.commune).map(|u| u.name.as_str()).unwrap_or(&c.commune))
                    " · " (web.t("mã hồ sơ ", "record ")) code { (short_id(&c.record_id)) }
                    " · " (web.t("trường ", "field ")) code { (c.path) }
                }
                div.side {
                    @for (i, v) in c.values.iter().enumerate() {
                        form.card.choice method="post" action={ "/review/conflicts/" (seg(&c.id)) "/resolve" } data-value=(i) {
                            (csrf_field(&web))
                            input type="hidden" name="value_json" value=(v.value.to_string());
                            p.chosen { (value_text(lang, &v.value)) }
                            p.muted {
                                (web.t("Người nhập: ", "By: ")) (v.user.as_deref().unwrap_or("?")) br;
                                (web.t("Thiết bị: ", "Device: ")) code { (v.device_id.as_deref().unwrap_or("?")) } br;
                                (web.t("Lúc: ", "At: ")) (at_text(lang, &v.at))
                            }
                            button type="submit" { (web.t("Giữ giá trị này", "Keep this value")) }
                        }
                    }
                }
                form.inline.new-value method="post" action={ "/review/conflicts/" (seg(&c.id)) "/resolve" } {
                    (csrf_field(&web))
                    label for={ "nv-" (seg(&c.id)) } { (web.t("Hoặc nhập giá trị khác", "Or enter another value")) }
                    input id={ "nv-" (seg(&c.id)) } name="value_text" required;
                    " "
                    button.secondary type="submit" { (web.t("Lưu giá trị mới", "Save the new value")) }
                }
            }
        }
    };
    Ok(page(&web, web.t("Xung đột dữ liệu", "Data conflicts"), Section::Conflicts, body))
}

#[derive(Deserialize)]
pub struct ResolveForm {
    value_json: Option<String>,
    value_text: Option<String>,
}

/// `POST /review/conflicts/{id}/resolve`: one of the shown values (as JSON), or a typed value
/// (JSON if it reads as JSON, else text, as in `gesync-field set`). The schema checks it.
pub async fn resolve(State(state): State<Shared>, Path(id): Path<String>, Posted { web, form: f }: Posted<ResolveForm>) -> WebResult {
    require_reviewer(&web)?;
    let value: Value = match (f.value_json, f.value_text) {
        (Some(j), _) => serde_json::from_str(&j).map_err(|_| WebError::bad_input("the value is not valid JSON"))?,
        (None, Some(t)) => serde_json::from_str(t.trim()).unwrap_or(Value::String(t.trim().to_string())),
        (None, None) => return Err(WebError::bad_input("choose a value or enter one")),
    };
    let db = state.db.clone();
    let p = web.p().clone();
    blocking(move || Ok(db.review().resolve_conflict(&p, &id, &value)?)).await?;
    Ok(Redirect::to("/review/conflicts?done=resolved").into_response())
}

// ---- duplicates ------------------------------------------------------------------------------

/// A record view as (field path, value) rows, without notes or anything about the sync.
fn record_rows(v: &Value) -> Vec<(String, Value)> {
    const HIDDEN: [&str; 6] = ["notes", "deleted_reason", "conflicts", "id", "kind", "commune"];
    let mut out = Vec::new();
    if let Value::Object(map) = v {
        for (k, val) in map {
            if HIDDEN.contains(&k.as_str()) {
                continue;
            }
            match val {
                Value::Object(inner) => {
                    for (k2, v2) in inner {
                        if !HIDDEN.contains(&k2.as_str()) {
                            out.push((format!("{k}.{k2}"), v2.clone()));
                        }
                    }
                }
                // Lists of services or support: their kinds.
                Value::Array(items) if items.iter().all(Value::is_object) => {
                    let kinds: Vec<Value> = items.iter().map(|i| i.get("kind").cloned().unwrap_or(Value::Null)).collect();
                    out.push((k.clone(), Value::Array(kinds)));
                }
                other => out.push((k.clone(), other.clone())),
            }
        }
    }
    out
}

/// The field paths of two records, each once, sorted.
fn all_paths(a: &[(String, Value)], b: &[(String, Value)]) -> Vec<String> {
    let mut paths: Vec<String> = a.iter().chain(b).map(|(k, _)| k.clone()).collect();
    paths.sort();
    paths.dedup();
    paths
}

/// `GET /review/duplicates?unit=`.
pub async fn duplicates(State(state): State<Shared>, web: Web, Query(q): Query<ReviewQuery>) -> WebResult {
    require_reviewer(&web)?;
    let unit = q.unit.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| web.p().org_unit.clone());
    let db = state.db.clone();
    let p = web.p().clone();
    let pairs = blocking(move || {
        let pairs = db.review().duplicates_under(&p, &unit)?;
        db.audit_log().audit(event(&p, "duplicates_list", unit))?;
        Ok(pairs)
    })
    .await?;
    let tree = state.db.tree();
    let lang = web.lang;
    let body = html! {
        h1 { (web.t("Hồ sơ có thể trùng", "Possible duplicates")) }
        (done_notice(lang, q.done.as_deref()))
        p.muted { (web.t(
            "Hai hồ sơ cùng loại, cùng xã, cùng giới tính và năm sinh, ngày cách nhau không quá 14 ngày. Nếu là một người, hãy gộp: hồ sơ được giữ nhận thêm các dịch vụ hỗ trợ của hồ sơ kia, hồ sơ kia được đánh dấu xoá.",
            "Two records of the same kind and commune, same sex and birth year, dated at most 14 days apart. If they are one person, merge them: the kept record gains the other's services, the other is marked deleted.")) }
        @if pairs.is_empty() {
            p.card { (web.t("Không có hồ sơ nào có thể trùng.", "There are no possible duplicates.")) }
        }
        @for pair in &pairs {
            @let a_id = pair.a["id"].as_str().unwrap_or_default().to_string();
            @let b_id = pair.b["id"].as_str().unwrap_or_default().to_string();
            @let rows_a = record_rows(&pair.a);
            @let rows_b = record_rows(&pair.b);
            @let paths = all_paths(&rows_a, &rows_b);
            section.card.pair data-pair=(pair.id) {
                h2 { (kind_name(lang, pair.kind.as_str())) " · " (tree.get(&pair.commune).map(|u| u.name.as_str()).unwrap_or(&pair.commune)) }
                table {
                    thead { tr { th { (web.t("Thông tin", "Item")) } th { (web.t("Hồ sơ A", "Record A")) " " code { (short_id(&a_id)) } } th { (web.t("Hồ sơ B", "Record B")) " " code { (short_id(&b_id)) } } } }
                    tbody {
                        @for path in &paths {
                            @let va = rows_a.iter().find(|(k, _)| k == path).map(|(_, v)| value_text(lang, v)).unwrap_or_else(|| "–".into());
                            @let vb = rows_b.iter().find(|(k, _)| k == path).map(|(_, v)| value_text(lang, v)).unwrap_or_else(|| "–".into());
                            tr {
                                td { (field_label(lang, path)) }
                                @if va == vb { td { (va) } td { (vb) } } @else { td.low { (va) } td.low { (vb) } }
                            }
                        }
                    }
                }
                div.bar {
                    form method="post" action={ "/review/duplicates/" (seg(&pair.id)) "/not-duplicate" } {
                        (csrf_field(&web))
                        button.secondary type="submit" { (web.t("Không phải trùng", "Not a duplicate")) }
                    }
                    form method="post" action={ "/review/duplicates/" (seg(&pair.id)) "/merge" } {
                        (csrf_field(&web))
                        input type="hidden" name="keep" value=(a_id);
                        button type="submit" { (web.t("Gộp, giữ hồ sơ A", "Merge, keep A")) }
                    }
                    form method="post" action={ "/review/duplicates/" (seg(&pair.id)) "/merge" } {
                        (csrf_field(&web))
                        input type="hidden" name="keep" value=(b_id);
                        button type="submit" { (web.t("Gộp, giữ hồ sơ B", "Merge, keep B")) }
                    }
                }
            }
        }
    };
    Ok(page(&web, web.t("Hồ sơ có thể trùng", "Possible duplicates"), Section::Duplicates, body))
}

#[derive(Deserialize)]
pub struct NoFields {}

/// `POST /review/duplicates/{id}/not-duplicate`.
pub async fn not_duplicate(State(state): State<Shared>, Path(id): Path<String>, Posted { web, .. }: Posted<NoFields>) -> WebResult {
    require_reviewer(&web)?;
    let db = state.db.clone();
    let p = web.p().clone();
    blocking(move || Ok(db.review().mark_not_duplicate(&p, &id)?)).await?;
    Ok(Redirect::to("/review/duplicates?done=dismissed").into_response())
}

#[derive(Deserialize)]
pub struct MergeForm {
    keep: String,
}

/// `POST /review/duplicates/{id}/merge`.
pub async fn merge(State(state): State<Shared>, Path(id): Path<String>, Posted { web, form: f }: Posted<MergeForm>) -> WebResult {
    require_reviewer(&web)?;
    let keep: RecordId = f.keep.parse().map_err(|e: sync_protocol::BadRecordId| WebError::bad_input(e.to_string()))?;
    let db = state.db.clone();
    let p = web.p().clone();
    blocking(move || Ok(db.review().merge_duplicates(&p, &id, keep)?)).await?;
    Ok(Redirect::to("/review/duplicates?done=merged").into_response())
}

// ---- approval --------------------------------------------------------------------------------

/// `GET /review/approval?unit=&period=`.
pub async fn approval(State(state): State<Shared>, web: Web, Query(q): Query<ReviewQuery>) -> WebResult {
    require_reviewer(&web)?;
    let (unit, period) = super::district::figures_target(&web, &state.db, q.unit.clone(), q.period.clone())?;
    let db = state.db.clone();
    let code = unit.code.clone();
    let (open, approvals, current) = blocking(move || Ok((db.review().open_conflicts(&code)?, db.review().approvals_under(&code)?, db.figures().indicators(&code, period)?))).await?;
    let a = Approval::find(&approvals, &unit.code, period);
    let lang = web.lang;
    let body = html! {
        h1 { (web.t("Phê duyệt số liệu", "Approve the figures")) ": " (unit.name) }
        (done_notice(lang, q.done.as_deref()))
        div.bar { (super::district::period_selector(&web, "/review/approval", &unit.code, period)) }
        h2 { (fmt::period(lang, period)) " " (fmt::approval_badge(lang, a)) }
        @if let Some(a) = a {
            p id="approval-state" {
                (web.t("Phê duyệt bởi ", "Approved by ")) strong { (a.approved_by) } (web.t(" lúc ", " at ")) (fmt::datetime(lang, a.approved_at)) "."
                @if a.changes_after > 0 {
                    " " (web.t("Sau khi phê duyệt có ", "Since then, ")) (a.changes_after)
                    (web.t(" thay đổi hồ sơ làm thay đổi số liệu; hãy kiểm tra và phê duyệt lại.", " record changes altered these figures; check them and approve again."))
                }
            }
        }
        table {
            thead { tr { th { (web.t("Chỉ tiêu", "Indicator")) } th.num { (web.t("Số liệu hiện tại", "Current figures")) } } }
            tbody {
                @for id in IndicatorId::ALL {
                    tr { td { (fmt::indicator_code(id)) ". " (fmt::indicator(lang, id)) } (cell(lang, &current, id)) }
                }
            }
        }
        @if open > 0 {
            p.notice id="approval-blocked" {
                (web.t("Chưa thể phê duyệt: còn ", "Cannot approve yet: ")) strong { (open) }
                (web.t(" hồ sơ có xung đột dữ liệu. ", " record(s) have open conflicts. "))
                a href="/review/conflicts" { (web.t("Giải quyết xung đột", "Resolve the conflicts")) }
            }
        } @else {
            form method="post" action="/review/approval" {
                (csrf_field(&web))
                input type="hidden" name="unit" value=(unit.code);
                input type="hidden" name="period" value=(period);
                p {
                    button id="approve" type="submit" {
                        @if a.is_some() { (web.t("Phê duyệt lại số liệu ", "Approve again: ")) } @else { (web.t("Phê duyệt số liệu ", "Approve the figures: ")) }
                        (fmt::period(lang, period))
                    }
                }
                p.muted { (web.t("Phê duyệt ghi lại số liệu hiện tại; nếu sau đó có hồ sơ thay đổi, trang này sẽ báo để phê duyệt lại.", "Approving records the current figures; if a record changes afterwards, this page says so.")) }
            }
        }
    };
    Ok(page(&web, web.t("Phê duyệt số liệu", "Approve the figures"), Section::Approval, body))
}

#[derive(Deserialize)]
pub struct ApproveForm {
    unit: String,
    period: String,
}

/// `POST /review/approval`.
pub async fn approve(State(state): State<Shared>, Posted { web, form: f }: Posted<ApproveForm>) -> WebResult {
    require_reviewer(&web)?;
    let period: Period = f.period.parse().map_err(|e: indicators::PeriodError| WebError::bad_input(e.to_string()))?;
    let db = state.db.clone();
    let p = web.p().clone();
    let unit = f.unit.clone();
    blocking(move || Ok(db.review().approve(&p, &unit, period)?)).await?;
    let q = serde_urlencoded::to_string([("unit", f.unit.as_str()), ("period", &period.to_string()), ("done", "approved")]).unwrap_or_default();
    Ok(Redirect::to(&format!("/review/approval?{q}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_values_read_as_words() {
        assert_eq!(field_label(Lang::Vi, "victim.sex"), "Nạn nhân · Giới tính");
        assert_eq!(field_label(Lang::Vi, "services.0.provider"), "Dịch vụ hỗ trợ 1 · Đơn vị cung cấp");
        assert_eq!(field_label(Lang::En, "odd_field"), "odd_field");
        assert_eq!(value_text(Lang::Vi, &serde_json::json!("male")), "Nam (male)");
        assert_eq!(value_text(Lang::En, &serde_json::json!(true)), "Yes");
        assert_eq!(value_text(Lang::Vi, &serde_json::json!("Trạm y tế")), "Trạm y tế");
        assert_eq!(value_text(Lang::Vi, &serde_json::json!("2026-02-10")), "10/02/2026");
        assert_eq!(value_text(Lang::Vi, &serde_json::json!([])), "–");
        let rows = record_rows(&serde_json::json!({"notes": "secret", "victim": {"sex": "female"}, "services": [{"kind": "health", "provider": "x"}]}));
        assert!(!rows.iter().any(|(k, v)| k.contains("notes") || v.to_string().contains("secret")));
        assert!(rows.contains(&("services".to_string(), serde_json::json!(["health"]))));
    }
}
