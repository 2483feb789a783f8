//! Recording results in BENCHMARKS.md: each benchmark owns one `## ` section holding a
//! table with one row per configuration (size, database). A new result replaces the row
//! of its configuration and keeps the others; every other section is left as it was.

use std::cmp::Ordering;
use std::path::Path;

use anyhow::{Context, Result};

/// A benchmark's section.
#[derive(Debug)]
pub struct Section<'a> {
    /// The heading, without `## `.
    pub title: &'a str,
    /// Text before the table.
    pub intro: &'a str,
    pub header: &'a [&'a str],
    /// The columns that name a configuration: a row with the same values is replaced.
    pub key: &'a [usize],
    /// Text after the table.
    pub outro: &'a str,
}

/// Puts `row` into the section's table in the file at `path` (created if missing), and
/// says so on standard output.
pub fn record(path: &Path, section: &Section<'_>, row: Vec<String>) -> Result<()> {
    let doc = match std::fs::read_to_string(path) {
        Ok(doc) => doc,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_owned(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let updated = upsert(&doc, section, row);
    std::fs::write(path, updated).with_context(|| format!("write {}", path.display()))?;
    println!(
        "\nRecorded in {} (section \"{}\").",
        path.display(),
        section.title
    );
    Ok(())
}

/// `doc` with the section's table holding `row`.
pub fn upsert(doc: &str, section: &Section<'_>, row: Vec<String>) -> String {
    let heading = format!("## {}", section.title);
    let lines: Vec<&str> = doc.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == heading);
    let (before, old, after) = match start {
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|l| l.starts_with("## "))
                .map_or(lines.len(), |i| start + 1 + i);
            (&lines[..start], &lines[start + 1..end], &lines[end..])
        }
        None => (&lines[..], &lines[0..0], &lines[0..0]),
    };
    let notes = notes_after_outro(old, section.outro);
    let mut rows: Vec<Vec<String>> = table_rows(old, section.header.len())
        .into_iter()
        .filter(|r| section.key.iter().any(|&k| r.get(k) != row.get(k)))
        .collect();
    rows.push(row);
    rows.sort_by(|a, b| {
        section
            .key
            .iter()
            .map(|&k| compare_cells(&a[k], &b[k]))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });

    let mut out = String::new();
    for line in before {
        out.push_str(line);
        out.push('\n');
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(&heading);
    out.push_str("\n\n");
    if !section.intro.is_empty() {
        out.push_str(section.intro.trim_end());
        out.push_str("\n\n");
    }
    out.push_str(&format!("| {} |\n", section.header.join(" | ")));
    let rule: Vec<&str> = section
        .header
        .iter()
        .enumerate()
        .map(|(i, _)| if i < 2 { "---" } else { "---:" })
        .collect();
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    if !section.outro.is_empty() {
        out.push('\n');
        out.push_str(section.outro.trim_end());
        out.push('\n');
    }
    if !notes.is_empty() {
        out.push('\n');
        for line in notes {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !after.is_empty() {
        out.push('\n');
        for line in after {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// What people wrote in a section after its outro (an analysis of the figures, say):
/// kept when the table is rewritten. Nothing when the outro is not found as it is now.
fn notes_after_outro<'a>(section: &[&'a str], outro: &str) -> Vec<&'a str> {
    let outro: Vec<&str> = outro.trim_end().lines().collect();
    let Some(first) = outro.first() else {
        return Vec::new();
    };
    let Some(at) = section
        .iter()
        .position(|l| l.trim_end() == first.trim_end())
    else {
        return Vec::new();
    };
    let mut notes: Vec<&str> = section[at + outro.len()..]
        .iter()
        .copied()
        .skip_while(|l| l.trim().is_empty())
        .collect();
    while notes.last().is_some_and(|l| l.trim().is_empty()) {
        notes.pop();
    }
    notes
}

/// The body rows of the first table in `lines` that have `columns` cells.
fn table_rows(lines: &[&str], columns: usize) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut seen_rule = false;
    for line in lines {
        let line = line.trim();
        if !line.starts_with('|') {
            if seen_rule {
                break;
            }
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':')))
        {
            seen_rule = true;
            continue;
        }
        if seen_rule && cells.len() == columns {
            rows.push(cells);
        }
    }
    rows
}

/// Numbers (with thousands separators) compare as numbers, anything else as text.
fn compare_cells(a: &str, b: &str) -> Ordering {
    let number = |s: &str| s.replace(',', "").parse::<f64>().ok();
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTION: Section<'static> = Section {
        title: "Speed",
        intro: "How fast.",
        header: &["Date", "Size", "Time"],
        key: &[1],
        outro: "Goal: fast.",
    };

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn a_new_section_is_appended_and_other_sections_are_kept() {
        let doc = "# Benchmarks\n\n## Store\n\nkeep me\n";
        let out = upsert(doc, &SECTION, row(&["d1", "1,000", "5"]));
        assert_eq!(
            out,
            "# Benchmarks\n\n## Store\n\nkeep me\n\n## Speed\n\nHow fast.\n\n\
             | Date | Size | Time |\n|---|---|---:|\n| d1 | 1,000 | 5 |\n\nGoal: fast.\n"
        );
    }

    #[test]
    fn rows_of_the_same_configuration_are_replaced_and_others_kept_in_order() {
        let doc = "# B\n\n## Speed\n\nold intro\n\n| Date | Size | Time |\n|---|---|---:|\n\
                   | d1 | 10,000 | 50 |\n| d1 | 100 | 1 |\n\nold outro\n\n## After\n\nstays\n";
        let out = upsert(doc, &SECTION, row(&["d2", "100", "2"]));
        assert_eq!(
            out,
            "# B\n\n## Speed\n\nHow fast.\n\n| Date | Size | Time |\n|---|---|---:|\n\
             | d2 | 100 | 2 |\n| d1 | 10,000 | 50 |\n\nGoal: fast.\n\n## After\n\nstays\n"
        );
        let again = upsert(&out, &SECTION, row(&["d3", "1,000", "9"]));
        assert!(again.contains("| d2 | 100 | 2 |\n| d3 | 1,000 | 9 |\n| d1 | 10,000 | 50 |"));
    }

    #[test]
    fn notes_after_the_outro_are_kept() {
        let doc = "## Speed\n\nHow fast.\n\n| Date | Size | Time |\n|---|---|---:|\n\
                   | d1 | 100 | 1 |\n\nGoal: fast.\n\nWhy it is slow: disks.\n\n## After\n\nstays\n";
        let out = upsert(doc, &SECTION, row(&["d2", "100", "2"]));
        assert_eq!(
            out,
            "## Speed\n\nHow fast.\n\n| Date | Size | Time |\n|---|---|---:|\n\
             | d2 | 100 | 2 |\n\nGoal: fast.\n\nWhy it is slow: disks.\n\n## After\n\nstays\n"
        );
    }

    #[test]
    fn rows_of_an_older_table_shape_are_dropped() {
        let doc = "## Speed\n\n| A | B |\n|---|---|\n| x | y |\n";
        let out = upsert(doc, &SECTION, row(&["d", "1", "2"]));
        assert!(!out.contains("| x | y |"), "{out}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
