//! Rolling grandfather-father-son retention, as a pure function of
//! (backups, policy, now) that explains every decision.
//!
//! Keep the newest backup of each of the last `daily` days that have
//! backups, of each of the last `weekly` ISO weeks, and of each of the last
//! `monthly` months; the newest backup is always kept. Days, weeks and
//! months are UTC calendar periods of the backup's id, so a change of the
//! host's clock or time zone cannot move a backup into another period.
//! A backup dated after `now` (the clock went back) is kept: it is never
//! right to delete what may be the newest data because of a clock.
//!
//! [`decide_guarded`] adds two guards on top of the policy: a pinned
//! backup (`cellar pin`) is kept, and so is the newest backup whose
//! restore drill passed, so the last backup proven to restore is never
//! pruned in favour of ones that were never tried.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, Utc};

use crate::profile::Retention;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Newest,
    Daily,
    Weekly,
    Monthly,
    Future,
    /// `cellar pin`: kept until `cellar unpin`.
    Pinned,
    /// The newest backup whose restore drill passed.
    Drilled,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Newest => "newest",
            Tier::Daily => "daily",
            Tier::Weekly => "weekly",
            Tier::Monthly => "monthly",
            Tier::Future => "future",
            Tier::Pinned => "pinned",
            Tier::Drilled => "drilled",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names the calendar period (day, ISO week, month) a time falls in.
type PeriodOf = fn(&DateTime<Utc>) -> String;

/// What retention decided for one backup, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    /// Empty: delete.
    pub tiers: Vec<Tier>,
    pub reason: String,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.tiers.is_empty()
    }

    /// The tiers joined for display: `daily,weekly`, or `-`.
    pub fn tier_label(&self) -> String {
        if self.tiers.is_empty() {
            "-".into()
        } else {
            self.tiers
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}

/// Decides for every backup (given as id and time, in any order); the
/// result is sorted newest first.
pub fn decide(
    backups: &[(String, DateTime<Utc>)],
    policy: &Retention,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut sorted: Vec<&(String, DateTime<Utc>)> = backups.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));

    let mut tiers: BTreeMap<&str, Vec<Tier>> = BTreeMap::new();
    let mut reasons: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    // A backup dated after now is kept, but takes no other backup's place:
    // the newest and the periods are chosen among the others, so a clock
    // that ran ahead once never makes later backups look old.
    let present: Vec<&(String, DateTime<Utc>)> =
        sorted.iter().copied().filter(|(_, t)| *t <= now).collect();
    if let Some((id, _)) = present.first() {
        tiers.entry(id).or_default().push(Tier::Newest);
        reasons
            .entry(id)
            .or_default()
            .push("the newest backup is always kept".into());
    }
    for (id, t) in &sorted {
        if *t > now {
            tiers.entry(id).or_default().push(Tier::Future);
            reasons
                .entry(id)
                .or_default()
                .push("dated after now (the clock went back?); kept".into());
        }
    }
    let buckets: [(Tier, u32, PeriodOf); 3] = [
        (Tier::Daily, policy.daily, |t| {
            t.format("%Y-%m-%d").to_string()
        }),
        (Tier::Weekly, policy.weekly, |t| {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }),
        (Tier::Monthly, policy.monthly, |t| {
            t.format("%Y-%m").to_string()
        }),
    ];
    for (tier, count, period) in buckets {
        let mut seen: Vec<String> = Vec::new();
        for (id, t) in &present {
            if seen.len() as u32 >= count {
                break;
            }
            let p = period(t);
            if seen.contains(&p) {
                continue;
            }
            tiers.entry(id).or_default().push(tier);
            reasons.entry(id).or_default().push(format!(
                "newest of {tier} period {p} ({} of {count})",
                seen.len() + 1
            ));
            seen.push(p);
        }
    }
    sorted
        .into_iter()
        .map(|(id, t)| {
            let mut ts = tiers.remove(id.as_str()).unwrap_or_default();
            ts.sort();
            ts.dedup();
            let reason = match reasons.remove(id.as_str()) {
                Some(r) => r.join("; "),
                None => format!(
                    "not the newest of any of the last {} days, {} weeks or {} months with backups",
                    policy.daily, policy.weekly, policy.monthly
                ),
            };
            Decision {
                id: id.clone(),
                time: *t,
                tiers: ts,
                reason,
            }
        })
        .collect()
}

/// What the retention must keep whatever the policy says.
#[derive(Debug, Clone, Default)]
pub struct Guards {
    /// Pinned backup ids.
    pub pinned: std::collections::BTreeSet<String>,
    /// The newest backup id whose drill passed.
    pub drilled: Option<String>,
}

/// [`decide`], then keep what the guards protect.
pub fn decide_guarded(
    backups: &[(String, DateTime<Utc>)],
    policy: &Retention,
    now: DateTime<Utc>,
    guards: &Guards,
) -> Vec<Decision> {
    let mut out = decide(backups, policy, now);
    for d in &mut out {
        let mut why = Vec::new();
        if guards.pinned.contains(&d.id) {
            d.tiers.push(Tier::Pinned);
            why.push("pinned (`cellar unpin` releases it)".to_string());
        }
        if guards.drilled.as_deref() == Some(d.id.as_str()) {
            d.tiers.push(Tier::Drilled);
            why.push("the newest backup whose restore drill passed".to_string());
        }
        if why.is_empty() {
            continue;
        }
        if d.tiers.len() == why.len() {
            d.reason = why.join("; ");
        } else {
            d.reason = format!("{}; {}", d.reason, why.join("; "));
        }
        d.tiers.sort();
        d.tiers.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn id(t: DateTime<Utc>) -> String {
        crate::manifest::id_for(t)
    }

    const POLICY: Retention = Retention {
        daily: 7,
        weekly: 4,
        monthly: 12,
    };

    #[test]
    fn empty_and_single() {
        assert!(decide(&[], &POLICY, at(2026, 1, 1, 0)).is_empty());
        let one = vec![(id(at(2020, 1, 1, 2)), at(2020, 1, 1, 2))];
        let none = Retention {
            daily: 0,
            weekly: 0,
            monthly: 0,
        };
        let d = decide(&one, &none, at(2026, 1, 1, 0));
        assert_eq!(d[0].tiers, vec![Tier::Newest]);
    }

    #[test]
    fn several_runs_a_day_keep_the_newest_of_the_day() {
        let mut b = Vec::new();
        for h in [1, 7, 13, 19] {
            let t = at(2026, 3, 10, h);
            b.push((id(t), t));
        }
        let d = decide(&b, &POLICY, at(2026, 3, 10, 20));
        assert_eq!(d.iter().filter(|d| d.keep()).count(), 1);
        assert_eq!(d[0].id, id(at(2026, 3, 10, 19)));
        assert!(d[0].tiers.contains(&Tier::Daily));
        assert!(d[1].reason.starts_with("not the newest"));
    }

    #[test]
    fn pinned_and_newest_drilled_backups_are_kept() {
        let none = Retention {
            daily: 1,
            weekly: 0,
            monthly: 0,
        };
        let b: Vec<_> = (1..=5)
            .map(|d| (id(at(2026, 3, d, 2)), at(2026, 3, d, 2)))
            .collect();
        let guards = Guards {
            pinned: [id(at(2026, 3, 1, 2))].into(),
            drilled: Some(id(at(2026, 3, 3, 2))),
        };
        let d = decide_guarded(&b, &none, at(2026, 3, 5, 12), &guards);
        let kept: Vec<&str> = d
            .iter()
            .filter(|d| d.keep())
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(
            kept,
            vec![
                id(at(2026, 3, 5, 2)).as_str(),
                id(at(2026, 3, 3, 2)).as_str(),
                id(at(2026, 3, 1, 2)).as_str()
            ]
        );
        let pinned = d.iter().find(|d| d.id == id(at(2026, 3, 1, 2))).unwrap();
        assert_eq!(pinned.tier_label(), "pinned");
        assert!(pinned.reason.starts_with("pinned"), "{}", pinned.reason);
        let drilled = d.iter().find(|d| d.id == id(at(2026, 3, 3, 2))).unwrap();
        assert_eq!(drilled.tier_label(), "drilled");
    }

    #[test]
    fn a_backup_from_the_future_is_kept() {
        let now = at(2026, 3, 10, 12);
        let b = vec![
            (id(at(2026, 3, 11, 2)), at(2026, 3, 11, 2)),
            (id(at(2026, 3, 10, 2)), at(2026, 3, 10, 2)),
        ];
        let d = decide(&b, &POLICY, now);
        assert!(d.iter().all(|d| d.keep()));
        assert!(d[0].tiers.contains(&Tier::Future));
        assert!(d[1].tiers.contains(&Tier::Newest));
    }

    /// A backup made while the clock ran months ahead takes no other
    /// backup's place: the real ones keep their days, and each new one is
    /// the newest.
    #[test]
    fn a_backup_far_in_the_future_takes_no_place() {
        let policy = Retention {
            daily: 1,
            weekly: 1,
            monthly: 1,
        };
        let ahead = at(2027, 6, 1, 2);
        let mut b = vec![(id(ahead), ahead)];
        for day in 5..=8 {
            let t = at(2026, 12, day, 2);
            b.push((id(t), t));
        }
        let d = decide(&b, &policy, at(2026, 12, 8, 3));
        let kept: Vec<&str> = d
            .iter()
            .filter(|d| d.keep())
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(kept, [id(ahead).as_str(), id(at(2026, 12, 8, 2)).as_str()]);
        assert!(d[1].tiers.contains(&Tier::Newest));
        assert!(d[1].tiers.contains(&Tier::Daily));
    }

    /// Two years of nightly backups with missed nights, extra runs and a
    /// clock that sometimes jumps: after every night, the kept set is what
    /// the policy says, bounded, and includes the newest.
    #[test]
    fn two_years_of_nightly_runs() {
        let mut backups: Vec<(String, DateTime<Utc>)> = Vec::new();
        let start = at(2025, 1, 1, 2);
        let mut rng: u32 = 12345;
        let mut rand = || {
            rng = rng.wrapping_mul(1103515245).wrapping_add(12345);
            (rng >> 16) % 100
        };
        for night in 0..730 {
            let base = start + Duration::days(night);
            let r = rand();
            if r < 5 {
                continue; // host off: a missed night
            }
            let mut runs = vec![base];
            if r > 90 {
                runs.push(base + Duration::hours(11)); // a manual extra run
            }
            if r == 50 {
                runs.push(base - Duration::minutes(70)); // clock jumped back (DST-like)
            }
            for t in runs {
                let i = id(t);
                if !backups.iter().any(|(x, _)| *x == i) {
                    backups.push((i, t));
                }
            }
            let now = base + Duration::hours(12);
            let d = decide(&backups, &POLICY, now);
            let kept: Vec<&Decision> = d.iter().filter(|d| d.keep()).collect();
            // Bounded: never more than daily + weekly + monthly + newest.
            assert!(
                kept.len() <= (7 + 4 + 12 + 1) as usize,
                "{} kept",
                kept.len()
            );
            // The newest is kept.
            let newest = backups.iter().max_by_key(|b| b.1).unwrap();
            assert!(kept.iter().any(|k| k.id == newest.0));
            // Exactly the policy: the newest of each of the last 7 days with backups.
            let mut days: Vec<chrono::NaiveDate> =
                backups.iter().map(|b| b.1.date_naive()).collect();
            days.sort();
            days.dedup();
            for day in days.iter().rev().take(7) {
                let newest_of_day = backups
                    .iter()
                    .filter(|b| b.1.date_naive() == *day)
                    .max_by_key(|b| b.1)
                    .unwrap();
                assert!(kept
                    .iter()
                    .any(|k| k.id == newest_of_day.0 && k.tiers.contains(&Tier::Daily)));
            }
            let mut months: Vec<String> = backups
                .iter()
                .map(|b| b.1.format("%Y-%m").to_string())
                .collect();
            months.sort();
            months.dedup();
            for m in months.iter().rev().take(12) {
                let newest_of_month = backups
                    .iter()
                    .filter(|b| b.1.format("%Y-%m").to_string() == *m)
                    .max_by_key(|b| b.1)
                    .unwrap();
                assert!(kept
                    .iter()
                    .any(|k| k.id == newest_of_month.0 && k.tiers.contains(&Tier::Monthly)));
            }
            // Nothing else: every kept backup has a reason.
            assert!(kept.iter().all(|k| !k.reason.is_empty()));
            // Apply the decision, as prune does.
            backups.retain(|b| kept.iter().any(|k| k.id == b.0));
        }
        // After two years: 7 daily + up to 4 weekly + 12 monthly at most.
        assert!(backups.len() <= 24, "{}", backups.len());
        assert!(backups.len() >= 12);
    }
}
