//! The IAM catalogue tables askiam understands, and how each row is keyed.
//!
//! This is the contract with the Postgres exporter: a change to a table not listed here is
//! quarantined (never guessed at), and every format finds a row's key the same way.

use crate::model::RowData;

/// One catalogue table: its name and the columns of its primary key, in order.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static [&'static str],
    /// Personal data: kept in the entity store for validation, never indexed as text.
    pub personal: bool,
}

pub const TABLES: &[Table] = &[
    Table { name: "applications", key: &["id"], personal: false },
    Table { name: "approver_groups", key: &["id"], personal: false },
    Table { name: "roles", key: &["id"], personal: false },
    Table { name: "entitlements", key: &["id"], personal: false },
    Table { name: "sod_rules", key: &["id"], personal: false },
    Table { name: "users", key: &["id"], personal: true },
    Table { name: "user_roles", key: &["user_id", "role_id"], personal: true },
];

pub fn table(name: &str) -> Option<&'static Table> {
    // Exporters may qualify the name with its schema (`public.roles`, `iam.roles`).
    let bare = name.rsplit('.').next().unwrap_or(name);
    TABLES.iter().find(|t| t.name == bare)
}

impl Table {
    /// The row's key as text, or the name of the first key column that is missing.
    pub fn key_of(&self, data: &RowData) -> Result<String, String> {
        let mut parts = Vec::with_capacity(self.key.len());
        for col in self.key {
            match data.get(*col) {
                Some(Some(v)) if !v.is_empty() => parts.push(v.as_str()),
                _ => return Err((*col).to_string()),
            }
        }
        Ok(parts.join("|"))
    }
}

/// Reads a boolean the way Postgres and its exporters write it (`t`, `true`, `1`, `yes`).
pub fn truthy(v: Option<&str>) -> bool {
    matches!(v.map(|s| s.trim().to_ascii_lowercase()).as_deref(), Some("t" | "true" | "1" | "yes" | "y"))
}
