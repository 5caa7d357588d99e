//! `cellar status [--max-age DURATION] [--json] [PROFILE...]`: the last
//! success, last failure and last mirror drill of each profile, from the
//! state folder. Exit 1 when any profile's last run failed, its last
//! success is missing or older than `--max-age`, or a killed restore or
//! mirror left a scratch database behind, or a backup, prune or mirror of
//! it was killed (its lock file still names it): a Nagios-style check. Also
//! exit 1 when the last restore drill failed, when the last drill's
//! restore time (projected to the newest backup's size) exceeds the
//! profile's `rto`, or when the newest good backup is older than its
//! `rpo`, and when a profile is invalid (`run` skips it).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::profile;
use crate::restore::database::{self, Marker};
use crate::state::{self, Outcome, Run};
use crate::{schedule, Failure};

fn age(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs - secs % 60)).to_string()
}

/// Prints one line of the report, whatever the names in it hold.
fn say(line: String) {
    println!("{}", crate::logging::one_line(&line));
}

fn describe(now: DateTime<Utc>, r: Option<&Run>) -> String {
    match r {
        None => "never".into(),
        Some(r) => format!(
            "{} ({} ago)",
            r.backup_id
                .clone()
                .unwrap_or_else(|| r.finished_at.format("%Y-%m-%d %H:%M").to_string()),
            age(now, r.finished_at)
        ),
    }
}

pub fn run(
    dir: &Path,
    names: &[String],
    max_age: Option<Duration>,
    json: bool,
    fail_on_uncovered: bool,
) -> Result<i32, Failure> {
    let files = profile::discover(dir).map_err(Failure::config)?;
    let files = profile::select(dir, files, names).map_err(Failure::config)?;
    let now = schedule::now();
    let mut bad = 0;
    let mut rows = Vec::new();
    for f in &files {
        let st = state::load(dir, &f.name);
        let failed = st
            .last_run
            .as_ref()
            .is_some_and(|r| r.outcome == Outcome::Failure);
        let stale = match (st.present_success(now), max_age) {
            (None, _) => true,
            (Some(r), Some(max)) => (now - r.finished_at).to_std().unwrap_or_default() > max,
            (Some(_), None) => false,
        };
        // Scratch databases of restores or mirrors that were killed: they
        // may hold un-anonymized production data.
        let leftovers: Vec<Marker> = database::markers(dir)
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.profile == f.name && !m.running())
            .collect();
        let (rto, rpo) = profile::objectives(&f.path);
        // A profile that `run` would skip as invalid makes no backups: that
        // is a failure now, not when --max-age runs out. Secrets that this
        // user may not read or that its environment lacks (a monitoring
        // account) are not held against it.
        let invalid: Vec<String> = match profile::load(dir, f) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .iter()
                .filter(|p| {
                    !(p.message.contains("Permission denied")
                        || p.message.contains("environment variable"))
                })
                .map(|p| p.to_string())
                .collect(),
        };
        let holder = crate::lock::holder(dir, &f.name);
        let killed = match &holder {
            Some(crate::lock::Holder::Killed(h)) => Some(h.as_str()),
            _ => None,
        };
        let drill_failed = st.last_drill.as_ref().is_some_and(|d| !d.passed);
        let projected = st.projected_restore_seconds();
        let age_secs = st.newest_backup_age_seconds(now);
        let mut objectives = Vec::new();
        let mut missed = false;
        if let Some(rto) = rto {
            let limit = humantime::format_duration(rto);
            match (projected, st.last_drill.as_ref()) {
                (Some(p), Some(d)) if p > rto.as_secs_f64() => {
                    missed = true;
                    objectives.push(format!(
                        "RTO MISSED: a restore takes {p:.0}s (drill of {} took {:.1}s{}), more than rto = {limit}; make restores faster ([restore] jobs, zstd, a faster server) or raise rto",
                        d.backup_id,
                        d.restore_seconds,
                        if (p - d.restore_seconds).abs() > 0.05 { ", projected to the newest backup's size" } else { "" }
                    ))
                }
                (Some(p), _) => objectives.push(format!("rto {limit}: a restore takes {p:.1}s (last drill, projected to the newest backup): ok")),
                (None, last) => {
                    missed = true;
                    objectives.push(format!(
                        "RTO UNMEASURED: rto = {limit}, but {}; run `cellar drill {}`",
                        if last.is_some() {
                            "the last drill did not pass"
                        } else {
                            "no drill has passed yet"
                        },
                        f.name
                    ))
                }
            }
        }
        if let Some(rpo) = rpo {
            let limit = humantime::format_duration(rpo);
            match age_secs {
                Some(a) if a > rpo.as_secs_f64() => {
                    missed = true;
                    objectives.push(format!(
                        "RPO MISSED: the newest good backup started {} ago, more than rpo = {limit}",
                        humantime::format_duration(Duration::from_secs(a as u64))
                    ))
                }
                Some(a) => objectives.push(format!(
                    "rpo {limit}: the newest good backup started {} ago: ok",
                    humantime::format_duration(Duration::from_secs(a as u64))
                )),
                None => {
                    missed = true;
                    objectives.push(format!(
                        "RPO MISSED: rpo = {limit}, but there is no good backup"
                    ))
                }
            }
        }
        let verdict = if !invalid.is_empty() {
            "INVALID"
        } else if failed {
            "FAILED"
        } else if killed.is_some() {
            "INTERRUPTED"
        } else if stale {
            "STALE"
        } else if drill_failed {
            "DRILL FAILED"
        } else if missed {
            "OBJECTIVE MISSED"
        } else if !leftovers.is_empty() {
            "LEFTOVER"
        } else {
            "ok"
        };
        if verdict != "ok" {
            bad += 1;
        }
        if json {
            rows.push(serde_json::json!({
                "profile": f.name,
                "status": verdict.to_lowercase().replace(' ', "_"),
                "last_success": st.last_success,
                "last_failure": st.last_failure,
                "last_mirror": st.last_mirror,
                "last_drill": st.last_drill,
                "rto_seconds": rto.map(|d| d.as_secs_f64()),
                "rpo_seconds": rpo.map(|d| d.as_secs_f64()),
                "projected_restore_seconds": projected,
                "newest_backup_age_seconds": age_secs,
                "objectives": objectives,
                "problems": invalid,
                "leftover_scratch": leftovers,
                "running": match &holder {
                    Some(crate::lock::Holder::Running(h)) => Some(h),
                    _ => None,
                },
                "interrupted": killed,
                "interrupted_unknown": match &holder {
                    Some(crate::lock::Holder::Unknown(why)) => Some(why),
                    _ => None,
                },
                "last_success_age_seconds": st.last_success.as_ref().map(|r| (now - r.finished_at).num_seconds()),
            }));
        } else {
            println!("{}: {verdict}", f.name);
            for p in &invalid {
                println!(
                    "  invalid: {} (`cellar run` skips this profile until it is fixed)",
                    crate::logging::one_line(&p.replace("\n  fix: ", "; fix: "))
                );
            }
            match &holder {
                Some(crate::lock::Holder::Running(h)) => {
                    println!("  running now: {}", crate::logging::one_line(h))
                }
                Some(crate::lock::Holder::Killed(h)) => println!(
                    "  interrupted: {} did not finish: cellar was killed or the host went down (the next backup, prune or mirror of {} clears this)",
                    crate::logging::one_line(h),
                    f.name
                ),
                Some(crate::lock::Holder::Unknown(why)) => println!(
                    "  interrupted runs cannot be told: {}; run `cellar status` as the user that runs the backups",
                    crate::logging::one_line(why)
                ),
                None => {}
            }
            println!(
                "  last success: {}",
                describe(now, st.last_success.as_ref())
            );
            if let Some(r) = &st.last_success {
                for w in &r.warnings {
                    println!("  warning: {}", crate::logging::one_line(w));
                }
                if r.finished_at
                    > now + chrono::Duration::minutes(crate::catalog::FUTURE_SLACK_MINUTES)
                {
                    println!(
                        "  warning: the last success is dated in the future ({}): the clock was ahead then, or is behind now",
                        r.finished_at.format("%Y-%m-%d %H:%M UTC")
                    );
                }
            }
            let failure = describe(now, st.last_failure.as_ref());
            match st.last_failure.as_ref().and_then(|r| r.error.as_deref()) {
                Some(e) => println!(
                    "  last failure: {failure}: {}",
                    crate::logging::one_line(e.lines().next().unwrap_or(""))
                ),
                None => println!("  last failure: {failure}"),
            }
            println!("  last mirror:  {}", describe(now, st.last_mirror.as_ref()));
            match &st.last_drill {
                None => println!("  last drill:   never"),
                Some(d) => match &d.error {
                    None => say(format!(
                        "  last drill:   {} passed by {} ({} ago): {} restored in {:.1}s ({}/s)",
                        d.backup_id,
                        d.by,
                        age(now, d.finished_at),
                        super::human_bytes(d.plain_bytes),
                        d.restore_seconds,
                        super::human_bytes(d.bytes_per_second as u64),
                    )),
                    Some(e) => say(format!(
                        "  last drill:   {} FAILED by {} ({} ago) after {:.1}s: {}",
                        d.backup_id,
                        d.by,
                        age(now, d.finished_at),
                        d.restore_seconds,
                        e.lines().next().unwrap_or("")
                    )),
                },
            }
            for o in &objectives {
                say(format!("  {o}"));
            }
            for m in &leftovers {
                let (what, next) = if m.target.starts_with("cellar drill of ") {
                    (
                        "a drill".to_string(),
                        format!("the next `cellar drill {}`", f.name),
                    )
                } else {
                    (
                        format!("a restore or mirror into {}", m.target),
                        format!("the next restore or mirror into {}", m.target),
                    )
                };
                say(format!(
                    "  leftover scratch database {} on {} ({what} started at {} did not finish; it may hold un-anonymized data): {next} drops it, or run DROP DATABASE {} (`cellar check` forgets it once it is gone, and names {} instead if the run was killed during its swap)",
                    m.scratch,
                    m.server,
                    m.started_at.format("%Y-%m-%d %H:%M UTC"),
                    m.scratch,
                    database::previous_name(&m.target)
                ));
                if let Some(undo) = &m.undo {
                    say(format!(
                        "  its swap into {} was cut short: {} may lack its views, routines, triggers and events; its old tables may be in {}, and its old definitions are in {} (restores into {} refuse until it is put back as the first lines of that file say, and the marker {} is deleted)",
                        m.target,
                        m.target,
                        crate::restore::database::previous_name(&m.target),
                        undo.display(),
                        m.target,
                        [
                            database::marker_path(dir, &m.server, &m.target),
                            database::legacy_marker_path(dir, &m.target)
                        ]
                        .into_iter()
                        .find(|p| p.exists())
                        .unwrap_or_else(|| database::marker_path(dir, &m.server, &m.target))
                        .display()
                    ));
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
    }
    if fail_on_uncovered {
        // Every profile counts for coverage, not only those named.
        let (profiles, invalid) = super::check::valid_profiles(dir)?;
        if json {
            // stdout holds the JSON; the findings go to the log.
            for (server, r) in crate::coverage::of(&profiles) {
                match r {
                    Ok(s) if s.uncovered.is_empty() => {}
                    Ok(s) => {
                        bad += s.uncovered.len();
                        tracing::error!(
                            "coverage of {server}: not backed up by any profile: {}",
                            s.uncovered.join(", ")
                        );
                    }
                    Err(e) => {
                        bad += 1;
                        tracing::error!("coverage of {server}: {e:#}");
                    }
                }
            }
        } else {
            bad += super::check::print_coverage(&profiles);
        }
        bad += invalid;
    }
    Ok(if bad > 0 { 1 } else { 0 })
}
