//! The audit log's monthly partitions (`audit_log_2026_12` holds December
//! 2026, UTC): created some months ahead, so that a row never finds its month
//! missing, and dropped once older than the retention, which is how rows
//! expire (a dropped partition costs no vacuum).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use crate::AuditError;

/// A calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Month {
    /// The month `t` falls in.
    pub fn of(t: SystemTime) -> Self {
        // Whole seconds, rounded down (before 1970 too).
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => {
                let d = e.duration();
                -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0)
            }
        };
        // Days to civil date (Howard Hinnant's algorithm), month and year only.
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year: year as i32,
            month: month as u32,
        }
    }

    /// `n` months later (or earlier, for a negative `n`).
    pub fn plus(self, n: i32) -> Self {
        let index = self.year * 12 + self.month as i32 - 1 + n;
        Self {
            year: index.div_euclid(12),
            month: index.rem_euclid(12) as u32 + 1,
        }
    }

    /// The partition's table name.
    pub fn table(self) -> String {
        format!("audit_log_{:04}_{:02}", self.year, self.month)
    }

    /// The month a partition's table name stands for.
    pub fn from_table(name: &str) -> Option<Self> {
        let (year, month) = name.strip_prefix("audit_log_")?.split_once('_')?;
        let (year, month) = (year.parse().ok()?, month.parse().ok()?);
        ((1..=12).contains(&month) && year > 0).then_some(Self { year, month })
    }

    /// Its first instant, as a timestamptz literal.
    fn start(self) -> String {
        format!("{:04}-{:02}-01 00:00:00+00", self.year, self.month)
    }
}

/// What one round of maintenance did.
#[derive(Debug, Default, PartialEq)]
pub struct Maintained {
    pub created: Vec<Month>,
    pub dropped: Vec<Month>,
}

/// The months that have a partition.
pub async fn existing(client: &Client) -> Result<Vec<Month>, AuditError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
              WHERE p.relname = 'audit_log'",
            &[],
        )
        .await?;
    let mut months: Vec<Month> = rows
        .iter()
        .filter_map(|r| Month::from_table(r.get(0)))
        .collect();
    months.sort();
    Ok(months)
}

/// Makes sure the months from `now`'s to `ahead` months later have a
/// partition, and drops those that ended more than `retention_months` months
/// before `now`'s month began (none when `retention_months` is `None`).
pub async fn maintain(
    client: &Client,
    now: SystemTime,
    ahead: u32,
    retention_months: Option<u32>,
) -> Result<Maintained, AuditError> {
    let this = Month::of(now);
    let had = existing(client).await?;
    let mut done = Maintained::default();
    for k in 0..=ahead as i32 {
        let month = this.plus(k);
        if had.contains(&month) {
            continue;
        }
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF audit_log FOR VALUES FROM ('{}') TO ('{}')",
                month.table(),
                month.start(),
                month.plus(1).start()
            ))
            .await?;
        done.created.push(month);
    }
    if let Some(keep) = retention_months {
        let oldest_kept = this.plus(-(keep as i32));
        for month in had.into_iter().filter(|m| *m < oldest_kept) {
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {}", month.table()))
                .await?;
            done.dropped.push(month);
        }
    }
    if done != Maintained::default() {
        tracing::info!(created = ?done.created, dropped = ?done.dropped, "audit partitions");
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn m(year: i32, month: u32) -> Month {
        Month { year, month }
    }

    #[test]
    fn months_of_instants() {
        assert_eq!(Month::of(at(0)), m(1970, 1));
        // 2026-12-08T02:54:35Z, 2024-02-29T23:59:59Z, 2025-03-01T00:00:00Z.
        assert_eq!(Month::of(at(1_796_698_475)), m(2026, 12));
        assert_eq!(Month::of(at(1_709_251_199)), m(2024, 2));
        assert_eq!(Month::of(at(1_740_787_200)), m(2025, 3));
        assert_eq!(Month::of(UNIX_EPOCH - Duration::from_secs(1)), m(1969, 12));
        assert_eq!(
            Month::of(UNIX_EPOCH - Duration::from_millis(1)),
            m(1969, 12)
        );
    }

    #[test]
    fn month_arithmetic_and_names() {
        assert_eq!(m(2026, 12).plus(1), m(2027, 1));
        assert_eq!(m(2026, 1).plus(-1), m(2025, 12));
        assert_eq!(m(2026, 5).plus(-17), m(2024, 12));
        assert_eq!(m(2026, 12).table(), "audit_log_2026_12");
        assert_eq!(Month::from_table("audit_log_2026_03"), Some(m(2026, 3)));
        for other in [
            "audit_log_2026_13",
            "audit_log",
            "audit_log_x_01",
            "other_2026_01",
        ] {
            assert_eq!(Month::from_table(other), None, "{other}");
        }
        assert_eq!(m(2027, 1).start(), "2027-01-01 00:00:00+00");
    }
}
