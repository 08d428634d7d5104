//! Admin pages: users (create, disable/enable, reset password, change role or org unit),
//! their devices (revoke), org units (add, rename, move, merge; merged units listed as history)
//! and targets. Every change goes through the same checked helpers as the JSON API and is
//! audited the same way.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use indicators::{IndicatorId, Milestones};
use maud::{html, Markup};
use serde::Deserialize;

use super::fmt;
use super::page::{blocking, csrf_field, page, Lang, Posted, Section, Web, WebError, WebResult};
use crate::api::{create_user_checked, level_for, merge_org_unit_checked, revoke_device_checked, update_user_checked, NewUserInput, Shared, UserPatch};
use crate::db::AuditEvent;
use crate::model::{OrgTree, OrgUnit, Principal, Role};

fn event(p: &Principal, action: &'static str, target: String) -> Option<AuditEvent> {
    Some(AuditEvent { user: p.username.clone(), device_id: Some(p.device_id.clone()), action, target })
}

/// A path segment, percent-encoded (usernames and device ids are restricted, but links must
/// stay correct for anything the store holds).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
    edit: Option<String>,
    unit: Option<String>,
    /// The unit the merge form starts with.
    merge: Option<String>,
}

/// The confirmation shown after a change (fixed texts: nothing from the request is echoed).
fn done_notice(lang: Lang, done: Option<&str>) -> Markup {
    let text = match done {
        Some("created") => lang.t("Đã tạo tài khoản.", "The account was created."),
        Some("saved") => lang.t("Đã lưu thay đổi.", "Changes saved."),
        Some("password") => lang.t("Đã đặt lại mật khẩu. Các phiên đăng nhập cũ của người dùng đã kết thúc.", "The password was reset. The user's earlier sessions have ended."),
        Some("disabled") => lang.t("Đã khoá tài khoản.", "The account was disabled."),
        Some("enabled") => lang.t("Đã mở khoá tài khoản.", "The account was enabled."),
        Some("revoked") => lang.t("Đã thu hồi thiết bị. Thiết bị sẽ tự xoá dữ liệu ở lần đồng bộ tới.", "The device was revoked. It wipes its data at its next sync."),
        Some("unit") => lang.t("Đã lưu đơn vị hành chính.", "The org unit was saved."),
        Some("merged") => lang.t(
            "Đã ghi nhận việc sáp nhập. Hồ sơ, đơn vị trực thuộc và số liệu của đơn vị cũ được tính cho đơn vị mới.",
            "The merge was recorded. The old unit's records, the units under it and its figures now count for its successor.",
        ),
        Some("target") => lang.t("Đã lưu chỉ tiêu.", "The target was saved."),
        _ => return html! {},
    };
    html! { p.ok role="status" { (text) } }
}

/// The units of the current map to choose from. A merged unit is offered only when it is the
/// one already chosen (an account still on it), marked as such, so that saving another field
/// does not silently move the account.
fn unit_options(lang: Lang, tree: &OrgTree, selected: Option<&str>, with_none: Option<&str>) -> Markup {
    html! {
        @if let Some(none) = with_none { option value="" selected[selected.is_none()] { (none) } }
        @for u in tree.all().filter(|u| u.is_current() || selected == Some(u.code.as_str())) {
            option value=(u.code) selected[selected == Some(u.code.as_str())] {
                (u.code) " · " (u.name)
                @if !u.is_current() { " (" (lang.t("đã sáp nhập", "merged")) ")" }
            }
        }
    }
}

fn role_options(lang: Lang, selected: Option<Role>) -> Markup {
    html! {
        @for r in Role::ALL {
            option value=(r.as_str()) selected[selected == Some(r)] { (fmt::role(lang, r)) }
        }
    }
}

// ---- users -----------------------------------------------------------------------------------

/// `GET /admin/users`.
pub async fn users(State(state): State<Shared>, web: Web, Query(q): Query<Done>) -> WebResult {
    web.require_admin()?;
    let db = state.db.clone();
    let tree = state.db.tree();
    let witness = state.audit_witness.clone();
    let (users, chain) = blocking(move || Ok((db.accounts().list_users()?, crate::api::audit_chain(&db, witness.as_deref())?))).await?;
    let users: Vec<_> = users.into_iter().filter(|u| web.p().may_administer(&tree, &u.org_unit)).collect();
    let lang = web.lang;
    let body = html! {
        h1 { (web.t("Người dùng", "Users")) }
        (done_notice(lang, q.done.as_deref()))
        table id="users" {
            thead {
                tr {
                    th { (web.t("Tên đăng nhập", "Username")) }
                    th { (web.t("Vai trò", "Role")) }
                    th { (web.t("Đơn vị", "Org unit")) }
                    th { (web.t("Trạng thái", "Status")) }
                    th {}
                }
            }
            tbody {
                @for u in &users {
                    tr data-user=(u.username) {
                        td { (u.username) }
                        td { (fmt::role_at(lang, u.role, tree.get(&u.org_unit).map(|x| x.level.as_str()))) }
                        td { (u.org_unit) " · " (tree.get(&u.org_unit).map(|x| x.name.as_str()).unwrap_or("?")) }
                        td {
                            @if u.disabled { span.badge.unmet { (web.t("Đã khoá", "Disabled")) } }
                            @else { span.badge.met { (web.t("Đang hoạt động", "Active")) } }
                        }
                        td { a href={ "/admin/users/" (seg(&u.username)) } { (web.t("Quản lý", "Manage")) } }
                    }
                }
            }
        }
        h2 { (web.t("Tạo tài khoản", "Create an account")) }
        form.card method="post" action="/admin/users" {
            (csrf_field(&web))
            div.form-grid {
                div { label for="nu-username" { (web.t("Tên đăng nhập", "Username")) } input #nu-username name="username" required pattern="[A-Za-z0-9._\\-]{3,64}"; }
                div { label for="nu-password" { (web.t("Mật khẩu", "Password")) } input #nu-password type="password" name="password" required autocomplete="new-password"; }
                div { label for="nu-role" { (web.t("Vai trò", "Role")) } select #nu-role name="role" { (role_options(lang, Some(Role::CommuneOfficer))) } }
                div { label for="nu-unit" { (web.t("Đơn vị", "Org unit")) } select #nu-unit name="org_unit" { (unit_options(lang, &tree, None, None)) } }
                div { button type="submit" { (web.t("Tạo tài khoản", "Create")) } }
            }
            p.muted { (web.t("Tên đăng nhập: 3–64 chữ cái không dấu, chữ số, dấu chấm, gạch dưới hoặc gạch ngang.", "Username: 3–64 letters, digits, '.', '_' or '-'.")) }
        }
        h2 { (web.t("Nhật ký kiểm tra", "Audit log")) }
        div.card #audit-chain {
            @if chain["valid"] == true {
                p { span.badge.met { (web.t("Nguyên vẹn", "Intact")) } " " (chain["entries"]) " " (web.t("mục", "entries")) }
            } @else {
                p { span.badge.unmet { (web.t("Bị sửa hoặc bị cắt", "Altered or cut")) } " " (web.t("từ mục", "from entry")) " " (chain["broken_at"]) }
            }
            @if let Some(sig) = chain["checkpoint"]["signature"].as_str() {
                p {
                    (web.t("Điểm ký mới nhất", "Latest signed checkpoint")) ": " (chain["checkpoint"]["entries"]) " "
                    (web.t("mục", "entries")) ", " code { (sig.get(..16).unwrap_or(sig)) }
                }
                p.muted { (web.t(
                    "Ghi lại hai giá trị này ở nơi khác. Nếu sau này số mục nhỏ hơn hoặc chữ ký khác, nhật ký đã bị cắt.",
                    "Note these two values somewhere else. If the count is ever lower, or the signature differs, the log was cut.",
                )) }
            }
        }
    };
    Ok(page(&web, web.t("Người dùng", "Users"), Section::Users, body))
}

#[derive(Deserialize)]
pub struct NewUserForm {
    username: String,
    password: String,
    role: String,
    org_unit: String,
}

/// `POST /admin/users`.
pub async fn create_user(State(state): State<Shared>, Posted { web, form: f }: Posted<NewUserForm>) -> WebResult {
    web.require_admin()?;
    let u = create_user_checked(&state, web.p(), NewUserInput { username: f.username.trim().to_string(), password: f.password, role: f.role, org_unit: f.org_unit }).await?;
    Ok(Redirect::to(&format!("/admin/users/{}?done=created", seg(&u.username))).into_response())
}

/// `GET /admin/users/{username}`: the account, its devices, and the forms that change them.
pub async fn user(State(state): State<Shared>, web: Web, Path(username): Path<String>, Query(q): Query<Done>) -> WebResult {
    web.require_admin()?;
    let db = state.db.clone();
    let un = username.clone();
    let (user, devices) = blocking(move || {
        let user = db.accounts().get_user(&un)?.ok_or_else(WebError::not_found)?;
        Ok((user, db.accounts().list_devices(&un)?))
    })
    .await?;
    let tree = state.db.tree();
    crate::api::require_admin_of(web.p(), &tree, &user.org_unit)?;
    let lang = web.lang;
    let base = format!("/admin/users/{}", seg(&user.username));
    let body = html! {
        p.muted { a href="/admin/users" { "← " (web.t("Người dùng", "Users")) } }
        h1 { (web.t("Tài khoản ", "Account ")) (user.username) }
        (done_notice(lang, q.done.as_deref()))
        p {
            (fmt::role_at(lang, user.role, tree.get(&user.org_unit).map(|x| x.level.as_str()))) " · " (user.org_unit) " · " (tree.get(&user.org_unit).map(|x| x.name.as_str()).unwrap_or("?")) " · "
            @if user.disabled { span.badge.unmet { (web.t("Đã khoá", "Disabled")) } } @else { span.badge.met { (web.t("Đang hoạt động", "Active")) } }
        }
        div.side {
            form.card method="post" action=(base) {
                h2 { (web.t("Vai trò và đơn vị", "Role and org unit")) }
                (csrf_field(&web))
                label for="role" { (web.t("Vai trò", "Role")) }
                select #role name="role" { (role_options(lang, Some(user.role))) }
                label for="org_unit" { (web.t("Đơn vị", "Org unit")) }
                select #org_unit name="org_unit" { (unit_options(lang, &tree, Some(&user.org_unit), None)) }
                p { button type="submit" { (web.t("Lưu thay đổi", "Save")) } }
            }
            form.card method="post" action={ (base) "/password" } {
                h2 { (web.t("Đặt lại mật khẩu", "Reset the password")) }
                (csrf_field(&web))
                label for="password" { (web.t("Mật khẩu mới", "New password")) }
                input #password type="password" name="password" required autocomplete="new-password";
                p { button type="submit" { (web.t("Đặt lại mật khẩu", "Reset password")) } }
            }
            form.card method="post" action={ (base) "/disabled" } {
                h2 { (web.t("Khoá tài khoản", "Disable the account")) }
                (csrf_field(&web))
                @if user.disabled {
                    input type="hidden" name="disabled" value="false";
                    p { (web.t("Tài khoản đang bị khoá.", "The account is disabled.")) }
                    p { button type="submit" { (web.t("Mở khoá", "Enable")) } }
                } @else {
                    input type="hidden" name="disabled" value="true";
                    p { (web.t("Khoá tài khoản sẽ kết thúc mọi phiên đăng nhập của người dùng.", "Disabling ends every session of the user.")) }
                    p { button.danger type="submit" { (web.t("Khoá tài khoản", "Disable")) } }
                }
            }
        }
        h2 { (web.t("Thiết bị", "Devices")) }
        @if devices.is_empty() {
            p { (web.t("Người dùng chưa đăng nhập từ thiết bị nào.", "The user has not signed in from any device.")) }
        } @else {
            table id="devices" {
                thead {
                    tr {
                        th { (web.t("Mã thiết bị", "Device id")) }
                        th { (web.t("Loại", "Kind")) }
                        th { (web.t("Lần đầu", "First seen")) }
                        th { (web.t("Lần cuối", "Last seen")) }
                        th { (web.t("Trạng thái", "Status")) }
                    }
                }
                tbody {
                    @for d in &devices {
                        tr data-device=(d.device_id) {
                            td { code { (d.device_id) } }
                            td { @if d.device_id.starts_with("web-") { (web.t("Trình duyệt", "Browser")) } @else { (web.t("Điện thoại", "Phone")) } }
                            td { (fmt::datetime(lang, d.first_seen)) }
                            td { (fmt::datetime(lang, d.last_seen)) }
                            td {
                                @if d.revoked {
                                    span.badge.unmet { (web.t("Đã thu hồi", "Revoked")) }
                                } @else {
                                    form.inline method="post" action={ (base) "/devices/" (seg(&d.device_id)) "/revoke" } {
                                        (csrf_field(&web))
                                        button.danger type="submit" { (web.t("Thu hồi", "Revoke")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&web, &user.username, Section::Users, body))
}

#[derive(Deserialize)]
pub struct RoleForm {
    role: String,
    org_unit: String,
}

/// `POST /admin/users/{username}`: role and org unit. Only what changed is sent on, since a
/// change ends the user's sessions.
pub async fn update_user(State(state): State<Shared>, Path(username): Path<String>, Posted { web, form: f }: Posted<RoleForm>) -> WebResult {
    web.require_admin()?;
    let db = state.db.clone();
    let un = username.clone();
    let current = blocking(move || db.accounts().get_user(&un)?.ok_or_else(WebError::not_found)).await?;
    let patch = UserPatch {
        role: (f.role != current.role.as_str()).then_some(f.role),
        org_unit: (f.org_unit != current.org_unit).then_some(f.org_unit),
        ..Default::default()
    };
    if patch.role.is_some() || patch.org_unit.is_some() {
        update_user_checked(&state, web.p(), &username, patch).await?;
    }
    Ok(Redirect::to(&format!("/admin/users/{}?done=saved", seg(&username))).into_response())
}

#[derive(Deserialize)]
pub struct PasswordForm {
    password: String,
}

/// `POST /admin/users/{username}/password`.
pub async fn reset_password(State(state): State<Shared>, Path(username): Path<String>, Posted { web, form: f }: Posted<PasswordForm>) -> WebResult {
    web.require_admin()?;
    update_user_checked(&state, web.p(), &username, UserPatch { password: Some(f.password), ..Default::default() }).await?;
    Ok(Redirect::to(&format!("/admin/users/{}?done=password", seg(&username))).into_response())
}

#[derive(Deserialize)]
pub struct DisabledForm {
    disabled: bool,
}

/// `POST /admin/users/{username}/disabled`.
pub async fn set_disabled(State(state): State<Shared>, Path(username): Path<String>, Posted { web, form: f }: Posted<DisabledForm>) -> WebResult {
    web.require_admin()?;
    update_user_checked(&state, web.p(), &username, UserPatch { disabled: Some(f.disabled), ..Default::default() }).await?;
    let done = if f.disabled { "disabled" } else { "enabled" };
    Ok(Redirect::to(&format!("/admin/users/{}?done={done}", seg(&username))).into_response())
}

#[derive(Deserialize)]
pub struct NoFields {}

/// `POST /admin/users/{username}/devices/{device_id}/revoke`.
pub async fn revoke_device(State(state): State<Shared>, Path((username, device_id)): Path<(String, String)>, Posted { web, .. }: Posted<NoFields>) -> WebResult {
    web.require_admin()?;
    revoke_device_checked(&state, web.p(), username.clone(), device_id).await?;
    Ok(Redirect::to(&format!("/admin/users/{}?done=revoked", seg(&username))).into_response())
}

// ---- org units -------------------------------------------------------------------------------

/// The current map in display order (depth-first from the roots), with each unit's depth.
/// Merged units are nobody's child any more; a merged root is left out here too (both are
/// listed as history).
fn tree_order(tree: &OrgTree) -> Vec<(usize, OrgUnit)> {
    let mut out = Vec::new();
    let mut roots: Vec<&OrgUnit> = tree.all().filter(|u| u.is_current() && u.parent.as_deref().is_none_or(|p| tree.get(p).is_none())).collect();
    roots.sort_by(|a, b| a.code.cmp(&b.code));
    let mut stack: Vec<(usize, String)> = roots.iter().rev().map(|u| (0, u.code.clone())).collect();
    while let Some((depth, code)) = stack.pop() {
        if out.iter().any(|(_, u): &(usize, OrgUnit)| u.code == code) {
            continue;
        }
        let Some(u) = tree.get(&code) else { continue };
        out.push((depth, u.clone()));
        let mut kids = tree.children(&code).to_vec();
        kids.sort();
        stack.extend(kids.into_iter().rev().map(|k| (depth + 1, k)));
    }
    out
}

/// `GET /admin/org-units[?edit=CODE][&merge=CODE]`: the current map, the forms that add, change
/// and merge units, and the merged units as history.
pub async fn org_units(web: Web, State(state): State<Shared>, Query(q): Query<Done>) -> WebResult {
    web.require_admin()?;
    let tree = state.db.tree();
    let lang = web.lang;
    let editing = q.edit.as_deref().and_then(|c| tree.get(c)).cloned();
    // What a merge may join: units of the current map that this admin administers.
    let mergeable: Vec<&OrgUnit> = tree.all().filter(|u| u.is_current() && web.p().may_administer(&tree, &u.code)).collect();
    let mut history: Vec<&OrgUnit> = tree.all().filter(|u| !u.is_current()).collect();
    history.sort_by(|a, b| (&a.effective, &a.code).cmp(&(&b.effective, &b.code)));
    // Accounts still on a merged unit: the admin moves them to the successor.
    let db = state.db.clone();
    let left_on: Vec<(String, String)> = blocking(move || Ok(db.accounts().list_users()?))
        .await?
        .into_iter()
        .filter(|u| tree.get(&u.org_unit).is_some_and(|x| !x.is_current()) && web.p().may_administer(&tree, &u.org_unit))
        .map(|u| (u.org_unit, u.username))
        .collect();
    let body = html! {
        h1 { (web.t("Đơn vị hành chính", "Org units")) }
        (done_notice(lang, q.done.as_deref()))
        p.muted { (web.t(
            "Mã đơn vị theo mã của Tổng cục Thống kê (tỉnh 2 số, huyện 3 số, xã 5 số). Cấp của đơn vị là dữ liệu: cây có thể có hai hoặc ba cấp.",
            "Codes follow the General Statistics Office (2-digit province, 3-digit district, 5-digit commune). Levels are data: the tree may have two or three levels.")) }
        div.two {
            table id="org-units" {
                thead { tr { th { (web.t("Đơn vị", "Unit")) } th { (web.t("Mã", "Code")) } th { (web.t("Cấp", "Level")) } th {} } }
                tbody {
                    @for (depth, u) in tree_order(&tree) {
                        tr data-unit=(u.code) {
                            td style={ "padding-left:" (0.55 + 1.4 * depth as f64) "rem" } { (u.name) }
                            td { (u.code) }
                            td { (fmt::level(lang, &u.level)) }
                            td {
                                a href={ "/admin/org-units?edit=" (u.code) } { (web.t("Sửa / chuyển", "Edit / move")) }
                                @if mergeable.iter().any(|m| m.code == u.code) {
                                    " · "
                                    a href={ "/admin/org-units?merge=" (u.code) "#merge" } { (web.t("Sáp nhập", "Merge")) }
                                }
                            }
                        }
                    }
                }
            }
            div.stack {
                form.card method="post" action="/admin/org-units" {
                    h2 {
                        @if editing.is_some() { (web.t("Sửa hoặc chuyển đơn vị", "Edit or move a unit")) }
                        @else { (web.t("Thêm đơn vị", "Add a unit")) }
                    }
                    (csrf_field(&web))
                    label for="ou-code" { (web.t("Mã đơn vị", "Code")) }
                    input #ou-code name="code" required pattern="[0-9]{2,12}" value=[editing.as_ref().map(|u| u.code.as_str())];
                    label for="ou-name" { (web.t("Tên đơn vị", "Name")) }
                    input #ou-name name="name" required value=[editing.as_ref().map(|u| u.name.as_str())];
                    label for="ou-parent" { (web.t("Thuộc đơn vị", "Parent")) }
                    select #ou-parent name="parent" {
                        (unit_options(lang, &tree, editing.as_ref().and_then(|u| u.parent.as_deref()), Some(web.t("— Không (cấp cao nhất) —", "— None (top level) —"))))
                    }
                    label for="ou-level" { (web.t("Cấp", "Level")) }
                    select #ou-level name="level" {
                        option value="" { (web.t("Tự động theo đơn vị cấp trên", "From the parent's level")) }
                        @for l in ["province", "district", "commune"] {
                            option value=(l) selected[editing.as_ref().is_some_and(|u| u.level == l)] { (fmt::level(lang, l)) }
                        }
                    }
                    p { button type="submit" { (web.t("Lưu", "Save")) } }
                    p.muted { (web.t("Nhập mã của đơn vị đã có để đổi tên hoặc chuyển sang đơn vị cấp trên khác.", "Enter an existing code to rename the unit or move it under another parent.")) }
                }
                form.card #merge method="post" action="/admin/org-units/merge" {
                    h2 { (web.t("Sáp nhập đơn vị", "Merge a unit")) }
                    (csrf_field(&web))
                    label for="mg-code" { (web.t("Đơn vị được sáp nhập", "The unit merged")) }
                    select #mg-code name="code" required {
                        option value="" selected[q.merge.is_none()] { (web.t("— Chọn đơn vị —", "— Choose a unit —")) }
                        @for u in &mergeable {
                            option value=(u.code) selected[q.merge.as_deref() == Some(u.code.as_str())] { (u.code) " · " (u.name) " (" (fmt::level(lang, &u.level)) ")" }
                        }
                    }
                    label for="mg-into" { (web.t("Sáp nhập vào", "Into")) }
                    select #mg-into name="into" required {
                        option value="" selected { (web.t("— Chọn đơn vị —", "— Choose a unit —")) }
                        @for u in &mergeable {
                            option value=(u.code) { (u.code) " · " (u.name) " (" (fmt::level(lang, &u.level)) ")" }
                        }
                    }
                    label for="mg-effective" { (web.t("Có hiệu lực từ ngày", "Effective from")) }
                    input #mg-effective type="date" name="effective" required value="2025-07-01" max=(fmt::today().to_string());
                    p { button type="submit" { (web.t("Sáp nhập", "Merge")) } }
                    p.muted { (web.t(
                        "Đơn vị cũ được giữ lại trong lịch sử: hồ sơ của nó được tính cho đơn vị mới, các đơn vị trực thuộc chuyển sang đơn vị mới, số liệu mọi kỳ được tính theo bản đồ hiện tại. Việc sáp nhập không hoàn tác được. Ngày điền sẵn, 01/07/2025, là ngày bắt đầu chính quyền địa phương hai cấp.",
                        "The old unit stays in the history: its records count for its successor, the units under it pass to the successor, and the figures of every period are made on the current map. A merge cannot be undone. The date filled in, 1 July 2025, is when the two-level local government began.")) }
                }
            }
        }
        @if !history.is_empty() {
            h2 { (web.t("Đơn vị đã sáp nhập (lịch sử)", "Merged units (history)")) }
            table id="merged-units" {
                thead { tr { th { (web.t("Đơn vị", "Unit")) } th { (web.t("Mã", "Code")) } th { (web.t("Cấp", "Level")) } th { (web.t("Sáp nhập", "Merge")) } th { (web.t("Tài khoản còn gắn với đơn vị", "Accounts still on the unit")) } } }
                tbody {
                    @for u in &history {
                        @let into = u.merged_into.as_deref().unwrap_or_default();
                        @let date = u.effective.as_deref().map(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map(|d| fmt::date(lang, d)).unwrap_or_else(|_| d.to_string())).unwrap_or_default();
                        tr data-unit=(u.code) {
                            td { (u.name) }
                            td { (u.code) }
                            td { (fmt::level(lang, &u.level)) }
                            td.merged {
                                (web.t("Đã sáp nhập vào ", "Merged into ")) (into)
                                @if let Some(s) = tree.get(into) { " · " (s.name) }
                                (web.t(" từ ", " from ")) (date)
                            }
                            td {
                                @for (i, (_, name)) in left_on.iter().filter(|(unit, _)| *unit == u.code).enumerate() {
                                    @if i > 0 { ", " }
                                    a href={ "/admin/users/" (seg(name)) } { (name) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&web, web.t("Đơn vị hành chính", "Org units"), Section::OrgUnits, body))
}

#[derive(Deserialize)]
pub struct OrgUnitForm {
    code: String,
    name: String,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    level: String,
}

/// `POST /admin/org-units`: adds a unit, or renames/moves an existing one.
pub async fn put_org_unit(State(state): State<Shared>, Posted { web, form: f }: Posted<OrgUnitForm>) -> WebResult {
    web.require_admin()?;
    let code = f.code.trim().parse::<sync_protocol::OrgUnitCode>().map_err(|e| WebError::bad_input(e.to_string()))?.to_string();
    let tree = state.db.tree();
    let parent = Some(f.parent.trim().to_string()).filter(|p| !p.is_empty());
    let level = level_for(&tree, &code, Some(f.level.as_str())).map_err(WebError::bad_input)?;
    let unit = OrgUnit { code: code.clone(), name: f.name, parent, level, ..Default::default() };
    state.db.org_units().check_org_unit(&unit)?;
    crate::api::check_org_unit_change(web.p(), &tree, &unit)?;
    let db = state.db.clone();
    let ev = event(web.p(), "org_unit_put", code);
    blocking(move || Ok(db.org_units().put_org_unit(unit, ev)?)).await?;
    Ok(Redirect::to("/admin/org-units?done=unit").into_response())
}

#[derive(Deserialize)]
pub struct MergeForm {
    code: String,
    into: String,
    effective: String,
}

/// `POST /admin/org-units/merge`: the API's merge (`merge_org_unit_checked`: an admin of both
/// units, audited as `org_unit_merge`).
pub async fn merge_org_unit(State(state): State<Shared>, Posted { web, form: f }: Posted<MergeForm>) -> WebResult {
    web.require_admin()?;
    merge_org_unit_checked(&state, web.p(), f.code.trim().to_string(), f.into.trim().to_string(), &f.effective).await?;
    Ok(Redirect::to("/admin/org-units?done=merged").into_response())
}

// ---- targets ---------------------------------------------------------------------------------

/// `GET /admin/targets?unit=CODE`: the targets in force for a unit, where each comes from, and
/// a form to set the unit's own.
pub async fn targets(State(state): State<Shared>, web: Web, Query(q): Query<Done>) -> WebResult {
    web.require_admin()?;
    let tree = state.db.tree();
    let code = q.unit.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| web.p().org_unit.clone());
    let unit = tree.get(&code).cloned().ok_or_else(WebError::not_found)?;
    let db = state.db.clone();
    let targets = blocking(move || Ok(db.figures().targets()?)).await?;
    let chain = tree.chain(&unit.code);
    let lang = web.lang;
    let body = html! {
        h1 { (web.t("Chỉ tiêu", "Targets")) ": " (unit.name) }
        (done_notice(lang, q.done.as_deref()))
        div.bar {
            form method="get" action="/admin/targets" {
                div {
                    label for="t-unit" { (web.t("Đơn vị", "Org unit")) }
                    select #t-unit name="unit" { (unit_options(lang, &tree, Some(&unit.code), None)) }
                }
                button.secondary type="submit" { (web.t("Xem", "Show")) }
            }
        }
        p.muted { (web.t(
            "Chỉ tiêu đặt cho một đơn vị áp dụng cho mọi đơn vị trực thuộc, trừ khi đơn vị cấp dưới đặt chỉ tiêu riêng. Chỉ tiêu của năm Y là mốc đầu tiên từ năm Y trở đi (2021–2025 theo mốc 2025, 2026–2030 theo mốc 2030).",
            "A target set on a unit applies to every unit below it unless one sets its own. The target for year Y is the first milestone at or after Y (2021–2025 use 2025, 2026–2030 use 2030).")) }
        table id="targets" {
            thead {
                tr {
                    th { (web.t("Chỉ tiêu", "Indicator")) }
                    th { (web.t("Đang áp dụng", "In force")) }
                    th { (web.t("Nguồn", "Set by")) }
                    th { (web.t("Đặt chỉ tiêu riêng (%)", "Set this unit's own (%)")) }
                }
            }
            tbody {
                @for id in IndicatorId::ALL {
                    @let in_force = targets.milestones_for(&chain, id);
                    @let source = chain.iter().find(|c| targets.units.get(*c).is_some_and(|m| m.contains_key(&id)));
                    @let m2025 = in_force.map(|m| m.for_year(2025));
                    @let m2030 = in_force.map(|m| m.for_year(2030));
                    tr data-indicator=(id.as_str()) {
                        td { (fmt::indicator_code(id)) ". " (fmt::indicator(lang, id)) }
                        td {
                            @if let Some(m) = in_force {
                                @for (i, (y, v)) in m.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (y) ": " (fmt::pct(lang, v))
                                }
                            } @else { "–" }
                        }
                        td {
                            @match source {
                                Some(c) if *c == unit.code => (web.t("Đơn vị này", "This unit")),
                                Some(c) => (tree.get(c).map(|u| u.name.clone()).unwrap_or_else(|| c.clone())),
                                None => (web.t("Chiến lược quốc gia (mặc định)", "National strategy (default)")),
                            }
                        }
                        td {
                            form.inline method="post" action="/admin/targets" {
                                (csrf_field(&web))
                                input type="hidden" name="unit" value=(unit.code);
                                input type="hidden" name="indicator" value=(id.as_str());
                                label.inline for={ "t2025-" (id.as_str()) } { "2025 " }
                                input id={ "t2025-" (id.as_str()) } name="y2025" inputmode="decimal" size="5" required value=[m2025.map(trim_pct)];
                                " "
                                label.inline for={ "t2030-" (id.as_str()) } { "2030 " }
                                input id={ "t2030-" (id.as_str()) } name="y2030" inputmode="decimal" size="5" required value=[m2030.map(trim_pct)];
                                " "
                                button type="submit" { (web.t("Lưu", "Save")) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&web, web.t("Chỉ tiêu", "Targets"), Section::Targets, body))
}

/// A fraction as a plain percentage number for an input field ("80", "62.5").
fn trim_pct(v: f64) -> String {
    let s = format!("{:.2}", v * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A percentage typed by a person: "80", "80%", "62,5" or "62.5" → 0.8, 0.625.
fn parse_pct(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches('%').trim().replace(',', ".");
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v / 100.0)
}

#[derive(Deserialize)]
pub struct TargetForm {
    unit: String,
    indicator: String,
    y2025: String,
    y2030: String,
}

/// `POST /admin/targets`.
pub async fn set_target(State(state): State<Shared>, Posted { web, form: f }: Posted<TargetForm>) -> WebResult {
    web.require_admin()?;
    let ind: IndicatorId = f.indicator.parse().map_err(|e: indicators::UnknownIndicator| WebError::bad_input(e.to_string()))?;
    let (a, b) = match (parse_pct(&f.y2025), parse_pct(&f.y2030)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(WebError::bad_input("targets are percentages from 0 to 100, e.g. 80 or 62,5")),
    };
    let m = Milestones::new([(2025, a), (2030, b)]).map_err(|_| WebError::bad_input("targets are percentages from 0 to 100, e.g. 80 or 62,5"))?;
    crate::api::require_admin_of(web.p(), &state.db.tree(), &f.unit)?;
    let db = state.db.clone();
    let ev = event(web.p(), "target_set", format!("{}/{ind}", f.unit));
    let unit = f.unit.clone();
    blocking(move || Ok(db.figures().set_target(&unit, ind, &m, ev)?)).await?;
    Ok(Redirect::to(&format!("/admin/targets?unit={}&done=target", seg(&f.unit))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_typed_by_people() {
        assert_eq!(parse_pct("80"), Some(0.8));
        assert_eq!(parse_pct(" 62,5 % "), Some(0.625));
        assert_eq!(parse_pct("abc"), None);
        assert_eq!(trim_pct(0.8), "80");
        assert_eq!(trim_pct(0.625), "62.5");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
