//! Live PostgreSQL as the `Catalog`: the facts an answer states are the database's, not the
//! index's, so an answer is right even when indexing lags.
//!
//! Parameterised queries only (a question's text never reaches SQL), through a small deadpool
//! pool so concurrent chat turns do not queue on one connection. Columns are read as text
//! where the schema allows, so a DBA widening a column does not break askiam.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, Row};

use super::facts::*;

pub struct PgCatalog {
    pool: Pool,
}

fn db_err(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Database(e.to_string())
}

impl PgCatalog {
    /// A pool of up to `max_size` connections to `url` (`postgres://user@host:port/db`).
    /// Connections are opened lazily; `check` proves the database answers.
    pub fn connect(url: &str, max_size: usize) -> Result<Self, CatalogError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| db_err(format!("database URL: {e}")))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(max_size.max(1)).build().map_err(db_err)?;
        Ok(PgCatalog { pool })
    }

    pub async fn check(&self) -> Result<(), CatalogError> {
        self.client().await?.simple_query("SELECT 1").await.map_err(db_err)?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, CatalogError> {
        self.pool.get().await.map_err(db_err)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, CatalogError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(db_err)?;
        client.query(&stmt, params).await.map_err(db_err)
    }
}

fn group_of(row: &Row, id: &str, name: &str, email: &str) -> Option<ApproverGroup> {
    let id: Option<String> = row.get(id);
    id.map(|id| ApproverGroup { id, name: row.get(name), email: row.get(email) })
}

#[async_trait]
impl Catalog for PgCatalog {
    fn source(&self) -> &'static str {
        "postgres"
    }

    async fn names(&self) -> Result<Vec<NamedEntity>, CatalogError> {
        let rows = self
            .query(
                "SELECT 'role' AS kind, id::text, name::text, NULL::text AS alias FROM roles
                 UNION ALL SELECT 'application', id::text, name::text, NULL FROM applications
                 UNION ALL SELECT 'approver_group', id::text, name::text, NULL FROM approver_groups
                 UNION ALL SELECT 'user', id::text, display_name::text, username::text FROM users",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let kind = match r.get::<_, &str>(0) {
                    "role" => EntityKind::Role,
                    "application" => EntityKind::Application,
                    "approver_group" => EntityKind::ApproverGroup,
                    _ => EntityKind::User,
                };
                let alias: Option<String> = r.get(3);
                NamedEntity { kind, id: r.get(1), name: r.get(2), aliases: alias.into_iter().collect() }
            })
            .collect())
    }

    async fn role(&self, id: &str) -> Result<Option<RoleFacts>, CatalogError> {
        let rows = self
            .query(
                "SELECT r.id::text, r.name::text, r.description::text, r.risk_level::text, r.requestable,
                        r.updated_at, a.id::text AS app_id, a.name::text AS app_name,
                        g.id::text AS group_id, g.name::text AS group_name, g.email::text AS group_email
                 FROM roles r
                 LEFT JOIN applications a ON a.id = r.application_id
                 LEFT JOIN approver_groups g ON g.id = r.approver_group_id
                 WHERE r.id = $1",
                &[&id],
            )
            .await?;
        let Some(r) = rows.first() else { return Ok(None) };
        let ents = self
            .query(
                "SELECT permission::text, description::text FROM entitlements WHERE role_id = $1 ORDER BY id",
                &[&id],
            )
            .await?;
        let entitlements = ents
            .iter()
            .map(|e| {
                let p: String = e.get(0);
                match e.get::<_, Option<String>>(1) {
                    Some(d) if !d.is_empty() => format!("{p} ({d})"),
                    _ => p,
                }
            })
            .collect();
        let app_id: Option<String> = r.get("app_id");
        Ok(Some(RoleFacts {
            id: r.get(0),
            name: r.get(1),
            description: r.get(2),
            risk_level: r.get(3),
            requestable: r.get(4),
            updated_at: r.get::<_, Option<DateTime<Utc>>>(5),
            application: app_id.map(|id| Ref { id, name: r.get("app_name") }),
            approver_group: group_of(r, "group_id", "group_name", "group_email"),
            entitlements,
        }))
    }

    async fn application(&self, id: &str) -> Result<Option<AppFacts>, CatalogError> {
        let rows = self
            .query(
                "SELECT id::text, name::text, description::text, criticality::text, owner_email::text, updated_at
                 FROM applications WHERE id = $1",
                &[&id],
            )
            .await?;
        let Some(a) = rows.first() else { return Ok(None) };
        let roles = self
            .query(
                "SELECT r.id::text, r.name::text, r.requestable,
                        g.id::text AS group_id, g.name::text AS group_name, g.email::text AS group_email
                 FROM roles r LEFT JOIN approver_groups g ON g.id = r.approver_group_id
                 WHERE r.application_id = $1 ORDER BY r.name",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| AppRole {
                id: r.get(0),
                name: r.get(1),
                requestable: r.get(2),
                approver_group: group_of(r, "group_id", "group_name", "group_email"),
            })
            .collect();
        Ok(Some(AppFacts {
            id: a.get(0),
            name: a.get(1),
            description: a.get(2),
            criticality: a.get(3),
            owner_email: a.get(4),
            updated_at: a.get(5),
            roles,
        }))
    }

    async fn approver_group(&self, id: &str) -> Result<Option<(ApproverGroup, Vec<Ref>)>, CatalogError> {
        let rows =
            self.query("SELECT id::text, name::text, email::text FROM approver_groups WHERE id = $1", &[&id]).await?;
        let Some(g) = rows.first() else { return Ok(None) };
        let group = ApproverGroup { id: g.get(0), name: g.get(1), email: g.get(2) };
        let roles = self
            .query("SELECT id::text, name::text FROM roles WHERE approver_group_id = $1 ORDER BY name", &[&id])
            .await?
            .iter()
            .map(|r| Ref { id: r.get(0), name: r.get(1) })
            .collect();
        Ok(Some((group, roles)))
    }

    async fn user(&self, id: &str) -> Result<Option<UserFacts>, CatalogError> {
        let rows = self
            .query(
                "SELECT id::text, username::text, display_name::text, title::text, department::text,
                        manager_id::text, status::text
                 FROM users WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(rows.first().map(|u| UserFacts {
            id: u.get(0),
            username: u.get(1),
            display_name: u.get(2),
            title: u.get(3),
            department: u.get(4),
            manager_id: u.get(5),
            status: u.get(6),
        }))
    }

    async fn user_roles(&self, user_id: &str) -> Result<Vec<Ref>, CatalogError> {
        Ok(self
            .query(
                "SELECT r.id::text, r.name::text FROM user_roles ur JOIN roles r ON r.id = ur.role_id
                 WHERE ur.user_id = $1 ORDER BY r.name",
                &[&user_id],
            )
            .await?
            .iter()
            .map(|r| Ref { id: r.get(0), name: r.get(1) })
            .collect())
    }

    async fn sod_rules(&self, role_id: &str) -> Result<Vec<SodRule>, CatalogError> {
        Ok(self
            .query(
                "SELECT s.id::text, o.id::text, o.name::text, s.severity::text, s.description::text
                 FROM sod_rules s
                 JOIN roles o ON o.id = CASE WHEN s.role_a_id = $1 THEN s.role_b_id ELSE s.role_a_id END
                 WHERE s.role_a_id = $1 OR s.role_b_id = $1
                 ORDER BY s.id",
                &[&role_id],
            )
            .await?
            .iter()
            .map(|r| SodRule {
                id: r.get(0),
                other: Ref { id: r.get(1), name: r.get(2) },
                severity: r.get(3),
                description: r.get(4),
            })
            .collect())
    }
}
