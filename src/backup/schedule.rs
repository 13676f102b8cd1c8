//! When a scheduled backup runs next: a cron expression (5 fields, or 6 with seconds) read
//! in UTC. Pure: sleeping until then is the caller's.

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::CronParser;
use jiff::Timestamp;

use super::Error;

/// A parsed cron schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

impl Schedule {
    /// Parses `expr` as validation does (`croner`'s default parser, which also takes
    /// nicknames such as `@daily`).
    ///
    /// # Errors
    /// [`Error::InvalidSchedule`].
    pub fn parse(expr: &str) -> Result<Self, Error> {
        let cron = CronParser::new()
            .parse(expr)
            .map_err(|source| Error::InvalidSchedule {
                expr: expr.to_owned(),
                source,
            })?;
        Ok(Self {
            expr: expr.to_owned(),
            cron,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first run strictly after `after`, in UTC.
    ///
    /// # Errors
    /// [`Error::NoNextRun`] when none exists (e.g. `0 0 30 2 *`, February 30th).
    pub fn next_after(&self, after: Timestamp) -> Result<Timestamp, Error> {
        let none = || Error::NoNextRun {
            expr: self.expr.clone(),
            after,
        };
        let start: DateTime<Utc> =
            DateTime::from_timestamp(after.as_second(), after.subsec_nanosecond().unsigned_abs())
                .ok_or_else(none)?;
        let next = self
            .cron
            .find_next_occurrence(&start, false)
            .map_err(|_| none())?;
        Timestamp::new(next.timestamp(), next.timestamp_subsec_nanos() as i32).map_err(|_| none())
    }
}

/// The first run of `expr` strictly after `after` (UTC); see [`Schedule`].
pub fn next_run(expr: &str, after: Timestamp) -> Result<Timestamp, Error> {
    Schedule::parse(expr)?.next_after(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_six_hours_runs_at_the_next_multiple_of_six_utc() {
        assert_eq!(
            next_run("0 */6 * * *", ts("2025-06-10T07:30:00Z")).unwrap(),
            ts("2025-06-10T12:00:00Z")
        );
    }

    #[test]
    fn the_next_run_is_strictly_after_a_matching_instant() {
        assert_eq!(
            next_run("0 * * * *", ts("2025-06-10T07:00:00Z")).unwrap(),
            ts("2025-06-10T08:00:00Z")
        );
    }

    #[test]
    fn daily_at_a_time_rolls_over_month_and_year() {
        assert_eq!(
            next_run("30 2 * * *", ts("2025-12-31T03:00:00Z")).unwrap(),
            ts("2026-01-01T02:30:00Z")
        );
    }

    #[test]
    fn weekdays_and_nicknames_are_understood() {
        // 2025-06-14 is a Saturday.
        assert_eq!(
            next_run("0 9 * * 1-5", ts("2025-06-14T10:00:00Z")).unwrap(),
            ts("2025-06-16T09:00:00Z")
        );
        assert_eq!(
            next_run("@daily", ts("2025-06-14T10:00:00Z")).unwrap(),
            ts("2025-06-15T00:00:00Z")
        );
    }

    #[test]
    fn garbage_is_an_invalid_schedule() {
        let err = Schedule::parse("every day").unwrap_err();
        assert_eq!(err.reason(), "InvalidSchedule");
    }

    #[test]
    fn an_impossible_date_has_no_next_run() {
        let err = next_run("0 0 30 2 *", ts("2025-01-01T00:00:00Z")).unwrap_err();
        assert_eq!(err.reason(), "NoNextRun");
    }
}
