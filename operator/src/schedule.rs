//! The pure decisions of scheduled backups: when the next one is due ([`next_due`], cron in
//! UTC, the clock passed in) and which old ones retention deletes ([`expired`]). No IO.

use std::str::FromStr;

use croner::Cron;
use jiff::{tz::TimeZone, Timestamp};

use crate::crd::backup::BackupPhase;

/// When the next scheduled backup is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The occurrence at this time has passed and no backup was made for it: make one now.
    Now(Timestamp),
    /// Not yet: the next occurrence.
    At(Timestamp),
}

/// A schedule that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("spec.backup.schedule {schedule:?} is not a cron expression: {reason}")]
pub struct InvalidSchedule {
    pub schedule: String,
    pub reason: String,
}

/// The first occurrence of `schedule` after `last` (the occurrence the newest scheduled backup
/// was made for, or, before the first one, when the schedule started counting), compared with
/// `now`. Only the newest missed occurrence is caught up, never a backlog.
pub fn next_due(schedule: &str, last: Timestamp, now: Timestamp) -> Result<Due, InvalidSchedule> {
    let invalid = |reason: String| InvalidSchedule { schedule: schedule.to_string(), reason };
    let cron = Cron::from_str(schedule).map_err(|error| invalid(error.to_string()))?;
    let after = last.to_zoned(TimeZone::UTC);
    let next = cron.find_next_occurrence(&after, false).map_err(|error| invalid(error.to_string()))?.timestamp();
    if next > now {
        return Ok(Due::At(next));
    }
    // Missed occurrences (the operator was down): one backup, for the latest of them.
    let latest = cron
        .find_previous_occurrence(&now.to_zoned(TimeZone::UTC), true)
        .map_err(|error| invalid(error.to_string()))?
        .timestamp();
    Ok(Due::Now(latest.max(next)))
}

/// One scheduled backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub name: String,
    pub scheduled_at: Timestamp,
    pub phase: Option<BackupPhase>,
}

/// The scheduled backups retention deletes: keep the newest `keep` completed ones and every
/// backup newer than the oldest of those (running ones included); delete the finished
/// (completed or failed) ones older than it. With fewer than `keep` completed backups nothing
/// is deleted, so failures never eat the last good backups. `keep` is at least one.
pub fn expired(backups: &[Scheduled], keep: u32) -> Vec<String> {
    let mut newest_first: Vec<&Scheduled> = backups.iter().collect();
    newest_first.sort_by(|a, b| b.scheduled_at.cmp(&a.scheduled_at).then_with(|| b.name.cmp(&a.name)));
    let kept_completed = newest_first
        .iter()
        .enumerate()
        .filter(|(_, backup)| backup.phase == Some(BackupPhase::Completed))
        .nth(usize::try_from(keep).unwrap_or(usize::MAX).saturating_sub(1));
    let Some((oldest_kept, _)) = kept_completed else {
        return Vec::new();
    };
    newest_first[oldest_kept + 1..]
        .iter()
        .filter(|backup| matches!(backup.phase, Some(BackupPhase::Completed) | Some(BackupPhase::Failed)))
        .map(|backup| backup.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn a_daily_schedule_is_not_due_before_its_time_and_due_after_it() {
        let last = at("2026-01-01T03:00:00Z");
        assert_eq!(
            next_due("0 3 * * *", last, at("2026-01-02T02:59:59Z")).ok(),
            Some(Due::At(at("2026-01-02T03:00:00Z")))
        );
        assert_eq!(
            next_due("0 3 * * *", last, at("2026-01-02T03:00:00Z")).ok(),
            Some(Due::Now(at("2026-01-02T03:00:00Z")))
        );
        assert_eq!(
            next_due("0 3 * * *", last, at("2026-01-02T03:07:00Z")).ok(),
            Some(Due::Now(at("2026-01-02T03:00:00Z")))
        );
    }

    #[test]
    fn missed_occurrences_make_one_backup_for_the_latest() {
        let last = at("2026-01-01T03:00:00Z");
        assert_eq!(
            next_due("0 3 * * *", last, at("2026-01-05T12:00:00Z")).ok(),
            Some(Due::Now(at("2026-01-05T03:00:00Z")))
        );
    }

    #[test]
    fn the_occurrence_a_backup_was_made_for_is_not_due_again() {
        let made_for = at("2026-01-01T00:10:00Z");
        assert_eq!(next_due("*/10 * * * *", made_for, made_for).ok(), Some(Due::At(at("2026-01-01T00:20:00Z"))));
    }

    #[test]
    fn a_schedule_that_does_not_parse_says_so() {
        let error = next_due("every day", at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"))
            .expect_err("not a cron expression");
        assert!(error.to_string().contains("spec.backup.schedule \"every day\""), "{error}");
    }

    fn backup(name: &str, day: u32, phase: BackupPhase) -> Scheduled {
        Scheduled { name: name.into(), scheduled_at: at(&format!("2026-01-{day:02}T03:00:00Z")), phase: Some(phase) }
    }

    #[test]
    fn retention_keeps_the_newest_completed_and_deletes_older_finished_ones() {
        use BackupPhase::*;
        let backups = [
            backup("d1", 1, Completed),
            backup("d2", 2, Failed),
            backup("d3", 3, Completed),
            backup("d4", 4, Completed),
            backup("d5", 5, Failed),
            backup("d6", 6, Completed),
            backup("d7", 7, Running),
        ];
        assert_eq!(expired(&backups, 2), ["d3", "d2", "d1"]);
        assert_eq!(expired(&backups, 3), ["d2", "d1"]);
        assert_eq!(expired(&backups, 4), Vec::<String>::new());
        assert_eq!(expired(&backups, 1), ["d5", "d4", "d3", "d2", "d1"]);
    }

    #[test]
    fn retention_never_deletes_while_fewer_good_backups_exist_than_it_keeps() {
        use BackupPhase::*;
        let backups = [backup("d1", 1, Completed), backup("d2", 2, Failed), backup("d3", 3, Failed)];
        assert_eq!(expired(&backups, 2), Vec::<String>::new());
    }
}
