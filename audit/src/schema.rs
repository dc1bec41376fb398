//! Versioned migrations, applied in order at start. Each runs in a
//! transaction of its own together with its row in `schema_migrations`, under
//! a transaction-scoped advisory lock, so that several processes starting at
//! once apply each migration exactly once.

use tokio_postgres::Client;

use crate::AuditError;

/// Every migration, oldest first; a released one is never edited, only
/// followed by a new one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "audit log",
    include_str!("../migrations/0001_audit_log.sql"),
)];

/// Key of the advisory lock the migrations are applied under.
const LOCK: i64 = 0x6365_6c6c_6e65_7401;

/// Applies the migrations this database does not have yet; returns the
/// versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, AuditError> {
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
            .await?;
        // Under the lock: two processes creating it at once would collide
        // even with IF NOT EXISTS.
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&version],
            )
            .await?
            .is_some();
        if !done {
            let failed = |source| AuditError::Migration {
                version,
                name,
                source,
            };
            tx.batch_execute(sql).await.map_err(failed)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&version, &name],
            )
            .await
            .map_err(failed)?;
            applied.push(version);
        }
        tx.commit().await?;
    }
    let newest: Option<i32> = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    match newest {
        Some(v) if v > known => Err(AuditError::NewerSchema(v)),
        _ => {
            if !applied.is_empty() {
                tracing::info!(?applied, "audit schema migrated");
            }
            Ok(applied)
        }
    }
}
