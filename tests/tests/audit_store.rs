//! The audit log's store on a real PostgreSQL: migrations applied once,
//! monthly partitions made ahead and dropped past the retention, rows
//! written idempotently and read back, usage totals per tenant.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use audit::partitions::{self, Month};
use audit::store::{self, GroupBy};
use audit::{AuditRow, schema};
use e2e::postgres::Postgres;

/// 2026-12-08T10:00:00Z, to the microsecond as PostgreSQL keeps it.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_724_000)
}

fn row(id: &str, tenant: &str, at: SystemTime, model: &str, hit: bool) -> AuditRow {
    AuditRow {
        created_at: at,
        request_id: id.into(),
        tenant: tenant.into(),
        cell: "cell-a".into(),
        route: "/v1/query".into(),
        status: 200,
        latency_ms: 12.5,
        question_sha256: Some("ab".repeat(32)),
        question: None,
        cache_outcome: Some(if hit { "hit" } else { "miss" }.into()),
        similarity: hit.then_some(0.97),
        provider: (!hit).then(|| "azure-eastus".into()),
        region: (!hit).then(|| "eastus".into()),
        model: (!hit).then(|| model.into()),
        fallback: None,
        tokens_in: if hit { 0 } else { 100 },
        tokens_out: if hit { 0 } else { 20 },
        cost_usd: if hit { 0.0 } else { 0.5 },
        groundedness: Some(if hit { 1.0 } else { 0.5 }),
        cited_documents: vec!["shipping".into(), "returns".into()],
    }
}

#[tokio::test]
async fn rows_are_kept_by_month_once_each_and_summed_per_tenant() {
    let pg = Postgres::start().unwrap();
    let mut client = audit::connect(&pg.url).await.unwrap();

    // Migrations: applied once, however often they are run.
    assert_eq!(schema::migrate(&mut client).await.unwrap(), vec![1]);
    assert_eq!(
        schema::migrate(&mut client).await.unwrap(),
        Vec::<i32>::new()
    );
    let indexes = pg
        .psql("SELECT indexname FROM pg_indexes WHERE tablename = 'audit_log' ORDER BY 1")
        .unwrap();
    assert_eq!(indexes, "audit_log_pkey\naudit_log_tenant_created_at");

    // This month and two ahead; a row from a month without a partition is
    // refused, and nothing of its batch is written.
    let done = partitions::maintain(&client, now(), 2, Some(3))
        .await
        .unwrap();
    let december = Month::of(now());
    assert_eq!(
        done.created,
        vec![december, december.plus(1), december.plus(2)]
    );
    let long_ago = now() - Duration::from_secs(200 * 86_400);
    let refused = store::insert(
        &mut client,
        &[
            row("r-new", "acme", now(), "gpt-4o-mini", false),
            row("r-old", "acme", long_ago, "gpt-4o-mini", false),
        ],
    )
    .await;
    assert!(refused.is_err());
    assert_eq!(store::get(&client, "r-new").await.unwrap(), None);

    // Rows of two tenants; the same batch written twice is written once.
    let rows = vec![
        row("r1", "acme", now(), "gpt-4o-mini", false),
        row(
            "r2",
            "acme",
            now() + Duration::from_secs(3600),
            "gemini-2.0-flash",
            false,
        ),
        row("r3", "acme", now() + Duration::from_secs(7200), "", true),
        row("r4", "globex", now(), "gpt-4o-mini", false),
    ];
    assert_eq!(store::insert(&mut client, &rows).await.unwrap(), 4);
    assert_eq!(store::insert(&mut client, &rows).await.unwrap(), 0);
    assert_eq!(
        store::get(&client, "r2").await.unwrap().as_ref(),
        Some(&rows[1])
    );
    assert_eq!(store::get(&client, "nope").await.unwrap(), None);

    let since = now() - Duration::from_secs(86_400);
    let by_model = store::usage(&client, Some("acme"), since, GroupBy::Model)
        .await
        .unwrap();
    let groups: Vec<(&str, i64, i64, f64)> = by_model
        .iter()
        .map(|u| (u.group.as_str(), u.requests, u.tokens_in, u.cost_usd))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("-", 1, 0, 0.0),
            ("gemini-2.0-flash", 1, 100, 0.5),
            ("gpt-4o-mini", 1, 100, 0.5)
        ]
    );
    let by_day = store::usage(&client, Some("acme"), since, GroupBy::Day)
        .await
        .unwrap();
    assert_eq!(by_day.len(), 1);
    let day = &by_day[0];
    assert_eq!(day.group, "2026-12-08");
    assert_eq!((day.requests, day.tokens_out), (3, 40));
    assert!((day.cost_usd - 1.0).abs() < 1e-9);
    assert!((day.cache_hit_share - 1.0 / 3.0).abs() < 1e-9);
    assert!((day.mean_groundedness.unwrap() - 2.0 / 3.0).abs() < 1e-6);
    let by_tenant = store::usage(&client, None, since, GroupBy::Tenant)
        .await
        .unwrap();
    let tenants: Vec<(&str, i64)> = by_tenant
        .iter()
        .map(|u| (u.group.as_str(), u.requests))
        .collect();
    assert_eq!(tenants, vec![("acme", 3), ("globex", 1)]);

    // Retention: a partition four months old goes, with its rows.
    let august = now() - Duration::from_secs(120 * 86_400);
    partitions::maintain(&client, august, 0, None)
        .await
        .unwrap();
    store::insert(
        &mut client,
        &[row("r-aug", "acme", august, "gpt-4o-mini", false)],
    )
    .await
    .unwrap();
    let done = partitions::maintain(&client, now(), 2, Some(3))
        .await
        .unwrap();
    assert_eq!(done.created, vec![]);
    assert_eq!(done.dropped, vec![Month::of(august)]);
    assert_eq!(store::get(&client, "r-aug").await.unwrap(), None);
    assert_eq!(
        partitions::existing(&client).await.unwrap(),
        vec![december, december.plus(1), december.plus(2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_at_once_apply_each_migration_once() {
    let pg = Postgres::start().unwrap();
    let mut runs = Vec::new();
    for _ in 0..4 {
        let url = pg.url.clone();
        runs.push(tokio::spawn(async move {
            let mut client = audit::connect(&url).await.unwrap();
            schema::migrate(&mut client).await.unwrap()
        }));
    }
    let mut applied = Vec::new();
    for run in runs {
        applied.extend(run.await.unwrap());
    }
    assert_eq!(applied, vec![1]);
    assert_eq!(
        pg.psql("SELECT version, name FROM schema_migrations")
            .unwrap(),
        "1|audit log"
    );
}
