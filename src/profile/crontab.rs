//! The schedule: 5-field crontab expressions, compiled for the `cron` crate.

use std::str::FromStr;

#[derive(Debug, Clone)]
pub struct Schedule {
    pub expr: String,
    pub cron: cron::Schedule,
}

/// Converts the 5-field crontab form into the 7 fields the cron crate
/// parses (seconds first, year last).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    let mut f: Vec<&str> = expr.split_whitespace().collect();
    let dow = crontab_dow(f[4])?;
    f[4] = &dow;
    // The crate's message repeats the expression with a caret; its last
    // line is the part that says what is wrong.
    let schedule = cron::Schedule::from_str(&format!("0 {} *", f.join(" "))).map_err(|e| {
        let text = e.to_string();
        text.lines().last().unwrap_or(&text).trim().to_string()
    })?;
    // `0 2 31 2 *` parses, but February has no 31st: it would never fire.
    if schedule.upcoming(chrono::Utc).next().is_none() {
        return Err("this schedule never fires (no such date)".into());
    }
    Ok(schedule)
}

/// Crontab numbers days of the week 0-7 from Sunday (0 and 7 both
/// Sunday); the cron crate numbers them 1-7 from Sunday. Names and `*`
/// (with or without a step) mean the same in both.
fn crontab_dow(field: &str) -> Result<String, String> {
    let shift = |n: &str| -> Result<u32, String> {
        match n.parse::<u32>() {
            Ok(d @ 0..=6) => Ok(d + 1),
            Ok(7) => Ok(1),
            _ => Err(format!("day of week `{n}` is not 0-7 or a name")),
        }
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let numeric = range.chars().all(|c| c.is_ascii_digit() || c == '-');
        if range == "*" || !numeric {
            out.push(part.to_string());
            continue;
        }
        let mapped = match range.split_once('-') {
            None => shift(range)?.to_string(),
            // 5-7 (Friday to Sunday) wraps in the crate's numbering.
            Some((a, "7")) if step.is_none() && a != "0" => {
                let a = shift(a)?;
                if a == 7 {
                    "7,1".to_string()
                } else {
                    format!("{a}-7,1")
                }
            }
            Some((a, b)) if b == "7" && a == "0" => "1-7".to_string(),
            Some((a, b)) => {
                let (a, b) = (shift(a)?, shift(b)?);
                if b < a {
                    return Err(format!("day-of-week range `{range}` runs backwards"));
                }
                format!("{a}-{b}")
            }
        };
        out.push(match step {
            Some(s) => format!("{mapped}/{s}"),
            None => mapped,
        });
    }
    Ok(out.join(","))
}
