//! The rows of the tables a store keeps for people beside its keyspace (PostgreSQL's
//! `gesync.records`, `org_units`, `accounts`, `devices`, `audit`, `approvals`, `conflicts` and
//! `audit_checkpoints`: `server/migrations/`), as
//! read back. The database keeps them from the keyspace itself; `gesync-server check` reads
//! them in the same consistent read as the keyspace and says where they differ.
//!
//! Types of their own, not the server's model types: a row is what the table holds (no
//! password hash, no document), and a change to the model does not change what is read here.

/// One row of `gesync.records` (the columns `check` compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub id: [u8; 16],
    pub kind: String,
    pub commune: String,
    /// The quarter it counts in (`2025Q3`), if any.
    pub quarter: Option<String>,
    pub deleted: bool,
    /// Its place in its commune's feed (none in a row written before step 3 that the feed
    /// did not name).
    pub feed_seq: Option<u64>,
}

/// One row of `gesync.org_units`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgUnitRow {
    pub code: String,
    pub name: String,
    pub parent: Option<String>,
    pub level: String,
    pub merged_into: Option<String>,
}

/// One row of `gesync.accounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub username: String,
    pub role: String,
    pub org_unit: String,
    pub disabled: bool,
}

/// One row of `gesync.devices` (the columns `check` compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub username: String,
    pub device_id: String,
    pub revoked: bool,
}

/// One row of `gesync.audit` (the columns `check` compares: the hash covers the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    pub hash: String,
}

/// One row of `gesync.approvals` (the columns `check` compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    pub org_unit: String,
    pub period: String,
    pub approved_by: String,
    /// Record changes synced after the approval that altered its figures.
    pub changes_after: u64,
}

/// One row of `gesync.conflicts`: a field of a record with concurrent different values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRow {
    pub record_id: [u8; 16],
    pub commune: String,
    pub path: String,
    /// How many values compete (the values themselves stay in the keyspace).
    pub competing: u32,
}

/// One row of `gesync.audit_checkpoints` (the columns `check` compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub seq: u64,
    pub hash: String,
    pub signature: String,
}

/// Everything in those tables, each in key order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tables {
    pub records: Vec<RecordRow>,
    pub org_units: Vec<OrgUnitRow>,
    pub accounts: Vec<AccountRow>,
    pub devices: Vec<DeviceRow>,
    pub audit: Vec<AuditRow>,
    pub approvals: Vec<ApprovalRow>,
    pub conflicts: Vec<ConflictRow>,
    pub audit_checkpoints: Vec<CheckpointRow>,
}
