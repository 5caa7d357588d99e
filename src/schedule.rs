//! When a profile is due: its cron schedule fired since its last
//! successful backup. Schedules are read in the host's local time, as
//! crontab reads them. Pure functions of (schedule, last success, now), so
//! tests can move the clock.

use chrono::{DateTime, Local, Utc};

/// The first time the schedule fires after `last_success`; with no backup
/// yet, the profile is due at once.
pub fn next_due(
    schedule: &cron::Schedule,
    last_success: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let Some(last) = last_success else {
        return Some(DateTime::<Utc>::MIN_UTC);
    };
    schedule
        .after(&last.with_timezone(&Local))
        .next()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether the schedule fired after the last success, at or before `now`.
/// A missed firing (host off at 02:00) keeps the profile due until it ran.
pub fn is_due(
    schedule: &cron::Schedule,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    next_due(schedule, last_success).is_some_and(|t| t <= now)
}

/// "now", or the time in `CELLAR_NOW` (RFC 3339) so tests can move the clock.
pub fn now() -> DateTime<Utc> {
    std::env::var("CELLAR_NOW")
        .ok()
        .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::parse_cron;

    fn t(s: &str) -> DateTime<Utc> {
        // Local time in these tests is whatever TZ is; build the instants
        // from local wall-clock times so 02:00 means 02:00 local.
        let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        naive
            .and_local_timezone(Local)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn fired_not_fired_missed_and_caught_up() {
        let nightly = parse_cron("0 2 * * *").unwrap();
        let last = Some(t("2026-11-20 02:00"));
        // Not fired yet: the next run is tonight at 02:00.
        assert!(!is_due(&nightly, last, t("2026-11-20 23:59")));
        // Fired.
        assert!(is_due(&nightly, last, t("2026-11-21 02:00")));
        assert!(is_due(&nightly, last, t("2026-11-21 02:04")));
        // Missed nights (host was off for two days): still due, once.
        assert!(is_due(&nightly, last, t("2026-11-23 09:00")));
        // Caught up: after the catch-up backup it waits for the next night.
        let caught_up = Some(t("2026-11-23 09:01"));
        assert!(!is_due(&nightly, caught_up, t("2026-11-23 23:00")));
        assert!(is_due(&nightly, caught_up, t("2026-11-24 02:00")));
        // Never backed up: due at once.
        assert!(is_due(&nightly, None, t("2026-11-23 09:00")));
    }

    #[test]
    fn several_runs_a_day() {
        let every_6h = parse_cron("0 */6 * * *").unwrap();
        let last = Some(t("2026-11-20 06:00"));
        assert!(!is_due(&every_6h, last, t("2026-11-20 11:59")));
        assert!(is_due(&every_6h, last, t("2026-11-20 12:00")));
        assert_eq!(next_due(&every_6h, last), Some(t("2026-11-20 12:00")));
    }
}
