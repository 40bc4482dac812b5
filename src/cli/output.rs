//! How the command line prints: aligned tables, UTC times, short checksums, pretty JSON, and the
//! `next cursor:` line of a listing (on standard error, so standard output stays the page).

use std::io::Write;

/// A table printed with aligned columns; cells are cleaned of control characters.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<const N: usize>(headers: [&str; N]) -> Table {
        Table { rows: vec![headers.iter().map(|h| h.to_string()).collect()] }
    }

    /// Adds a row (as many cells as headers).
    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.into_iter().map(|cell| clean(&cell)).collect());
    }

    /// Prints the table to standard output, every column but the last padded to its widest cell.
    pub fn print(&self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let columns = self.rows.first().map_or(0, Vec::len);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().map(|row| row.get(c).map_or(0, |cell| cell.chars().count())).max().unwrap_or(0))
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[c].saturating_sub(cell.chars().count()) + 2;
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// One line: control characters (newlines, tabs, escapes) become spaces.
fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Prints `value` as pretty JSON on standard output.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Tells the user, on standard error, how to get the next page, if there is one.
pub fn print_next_cursor(next_cursor: Option<&str>) {
    if let Some(cursor) = next_cursor {
        eprintln!("next cursor: {cursor}");
    }
}

/// The first 12 hex digits of a `sha256:<hex>` checksum.
pub fn short_checksum(checksum: &str) -> String {
    let hex = checksum.strip_prefix("sha256:").unwrap_or(checksum);
    hex.chars().take(12).collect()
}

/// Milliseconds since the Unix epoch as UTC, e.g. `2026-05-01 12:34:56Z`.
pub fn utc(millis: u64) -> String {
    let seconds = millis / 1000;
    let (days, time) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", time / 3600, time / 60 % 60, time % 60)
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `before→after` of an audit record, `-` for an absent side.
pub fn transition(before: Option<u64>, after: Option<u64>) -> String {
    let side = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    format!("{}→{}", side(before), side(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_767_225_599_999), "2025-12-31 23:59:59Z");
    }

    #[test]
    fn short_checksum_drops_the_algorithm() {
        assert_eq!(short_checksum("sha256:0123456789abcdef"), "0123456789ab");
    }
}
