//! Users and their devices: `GET`/`POST /api/v1/users`, `PATCH /api/v1/users/{username}`, a
//! user's devices and their revocation. The checked operations ([`create_user_checked`],
//! [`update_user_checked`], [`revoke_device_checked`]) are shared with the web pages, so both
//! apply the same checks and audit; [`crate::auth::valid_username`] is also the command line's rule.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, valid_username};
use crate::error::{AppError, AppResult};
use crate::model::{Principal, Role, User};

use super::auth::hash_new_password;
use super::{audit, blocking, check_role_fits, require_admin, require_admin_of, Authed, JsonBody, Shared};

fn user_json(u: &User) -> Value {
    json!({"username": u.username, "role": u.role, "org_unit": u.org_unit, "disabled": u.disabled})
}

pub(super) async fn list_users(State(state): State<Shared>, Authed(p): Authed) -> AppResult<axum::Json<Value>> {
    require_admin(&p)?;
    let db = state.db.clone();
    let users = blocking(move || Ok(db.accounts().list_users()?)).await?;
    let tree = state.db.tree();
    Ok(axum::Json(Value::Array(users.iter().filter(|u| p.may_administer(&tree, &u.org_unit)).map(user_json).collect())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    username: String,
    password: String,
    role: String,
    org_unit: String,
}

/// Validates and creates a user (shared by the API, the web pages and the CLI).
pub async fn create_user_checked(state: &Shared, by: &Principal, nu: NewUserInput) -> AppResult<User> {
    if !valid_username(&nu.username) {
        return Err(AppError::bad_request("username must be 3 to 64 letters, digits, '.', '_' or '-'"));
    }
    let role: Role = nu.role.parse().map_err(AppError::bad_request)?;
    auth::check_password_policy(&nu.password).map_err(AppError::bad_request)?;
    let tree = state.db.tree();
    check_role_fits(&tree, role, &nu.org_unit)?;
    require_admin_of(by, &tree, &nu.org_unit)?;
    let hash = hash_new_password(state, nu.password.clone()).await?;
    let user = User { username: nu.username, role, org_unit: nu.org_unit, password_hash: hash, disabled: false, session_epoch: 0 };
    let db = state.db.clone();
    let u2 = user.clone();
    let ev = audit(by, "user_create", user.username.clone());
    blocking(move || Ok(db.accounts().put_user(&u2, true, ev)?)).await?;
    Ok(user)
}

/// Input of [`create_user_checked`].
pub struct NewUserInput {
    pub username: String,
    pub password: String,
    pub role: String,
    pub org_unit: String,
}

pub(super) async fn create_user(State(state): State<Shared>, Authed(p): Authed, JsonBody(b): JsonBody<NewUser>) -> AppResult<(StatusCode, axum::Json<Value>)> {
    require_admin(&p)?;
    let u = create_user_checked(&state, &p, NewUserInput { username: b.username, password: b.password, role: b.role, org_unit: b.org_unit }).await?;
    Ok((StatusCode::CREATED, axum::Json(user_json(&u))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub role: Option<String>,
    pub org_unit: Option<String>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

/// Applies a user change (shared by the API and the web pages). The new password is hashed
/// first (slow, on the hashing permits); then one write transaction reads the user as it is
/// now, checks and applies the change, so that a change made meanwhile (a disable) is never
/// undone by this one.
pub async fn update_user_checked(state: &Shared, by: &Principal, username: &str, b: UserPatch) -> AppResult<User> {
    let db = state.db.clone();
    let un = username.to_string();
    let current = blocking(move || Ok(db.accounts().get_user(&un)?)).await?.ok_or_else(|| AppError::not_found("no such user"))?;
    require_admin_of(by, &state.db.tree(), &current.org_unit)?;
    let role = b.role.map(|r| r.parse().map_err(AppError::bad_request)).transpose()?;
    let password_hash = match b.password {
        Some(pw) => {
            auth::check_password_policy(&pw).map_err(AppError::bad_request)?;
            Some(hash_new_password(state, pw).await?)
        }
        None => None,
    };
    let (db, by, un, org_unit, disabled) = (state.db.clone(), by.clone(), username.to_string(), b.org_unit, b.disabled);
    let ev = audit(&by, "user_update", un.clone());
    blocking(move || {
        let tree = db.tree();
        let changed = db.accounts().update_user(&un, ev, |user| -> AppResult<()> {
            require_admin_of(&by, &tree, &user.org_unit)?;
            let mut end_sessions = false;
            if let Some(r) = role {
                user.role = r;
                end_sessions = true;
            }
            if let Some(ou) = org_unit {
                if tree.get(&ou).is_none() {
                    return Err(AppError::bad_request("unknown org unit"));
                }
                require_admin_of(&by, &tree, &ou)?;
                user.org_unit = ou;
                end_sessions = true;
            }
            if end_sessions {
                check_role_fits(&tree, user.role, &user.org_unit)?;
            }
            if let Some(d) = disabled {
                end_sessions |= d && !user.disabled;
                user.disabled = d;
            }
            if let Some(hash) = password_hash {
                user.password_hash = hash;
                end_sessions = true;
            }
            if end_sessions {
                user.session_epoch += 1;
            }
            Ok(())
        })?;
        changed.ok_or_else(|| AppError::not_found("no such user"))
    })
    .await
}

pub(super) async fn update_user(State(state): State<Shared>, Authed(p): Authed, Path(username): Path<String>, JsonBody(b): JsonBody<UserPatch>) -> AppResult<axum::Json<Value>> {
    require_admin(&p)?;
    let u = update_user_checked(&state, &p, &username, b).await?;
    Ok(axum::Json(user_json(&u)))
}

pub(super) async fn list_devices(State(state): State<Shared>, Authed(p): Authed, Path(username): Path<String>) -> AppResult<axum::Json<Value>> {
    require_admin(&p)?;
    let db = state.db.clone();
    let tree = state.db.tree();
    let devices = blocking(move || {
        let user = db.accounts().get_user(&username)?.ok_or_else(|| AppError::not_found("no such user"))?;
        require_admin_of(&p, &tree, &user.org_unit)?;
        Ok(db.accounts().list_devices(&username)?)
    })
    .await?;
    Ok(axum::Json(serde_json::to_value(devices).expect("devices serialise")))
}

/// Revokes a device (shared by the API and the web pages).
pub async fn revoke_device_checked(state: &Shared, by: &Principal, username: String, device_id: String) -> AppResult<()> {
    let db = state.db.clone();
    let ev = audit(by, "device_revoke", format!("{username}/{device_id}"));
    let (by, tree) = (by.clone(), state.db.tree());
    blocking(move || {
        let user = db.accounts().get_user(&username)?.ok_or_else(|| AppError::not_found("no such user"))?;
        require_admin_of(&by, &tree, &user.org_unit)?;
        match db.accounts().revoke_device(&username, &device_id, ev)? {
            true => Ok(()),
            false => Err(AppError::not_found("no such device")),
        }
    })
    .await
}

pub(super) async fn revoke_device(State(state): State<Shared>, Authed(p): Authed, Path((username, device_id)): Path<(String, String)>) -> AppResult<StatusCode> {
    require_admin(&p)?;
    revoke_device_checked(&state, &p, username, device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
