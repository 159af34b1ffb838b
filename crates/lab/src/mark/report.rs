//! What `lab mark` found: a line per check, a score per part, as text for a person or as one
//! JSON object for a grade sheet.

use std::fmt;

use serde::Serialize;

/// A part of the lab sheet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Part {
    /// The Multiply factory.
    #[value(name = "1")]
    One,
    /// Divide.
    #[value(name = "2a")]
    TwoA,
    /// The pipeline.
    #[value(name = "2b")]
    TwoB,
    /// Triplets.
    #[value(name = "3")]
    Three,
}

impl Part {
    /// Every part, in the sheet's order.
    pub const ALL: [Part; 4] = [Part::One, Part::TwoA, Part::TwoB, Part::Three];

    /// The part's name on the sheet: `1`, `2a`, `2b` or `3`.
    pub fn name(self) -> &'static str {
        match self {
            Part::One => "1",
            Part::TwoA => "2a",
            Part::TwoB => "2b",
            Part::Three => "3",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that the report can line its parts up.
        f.pad(self.name())
    }
}

impl Serialize for Part {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One check: what was expected and what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is checked, as a sentence.
    pub check: String,
    /// Whether the factory passed it.
    pub passed: bool,
    /// What a right factory does.
    pub expected: String,
    /// What this factory did, or why the check could not be made.
    pub seen: String,
}

impl Check {
    /// A check the factory passed.
    pub fn pass(check: &str, expected: impl Into<String>, seen: impl Into<String>) -> Self {
        Self {
            check: check.to_owned(),
            passed: true,
            expected: expected.into(),
            seen: seen.into(),
        }
    }

    /// A check the factory failed.
    pub fn fail(check: &str, expected: impl Into<String>, seen: impl Into<String>) -> Self {
        Self {
            passed: false,
            ..Self::pass(check, expected, seen)
        }
    }

    /// Passed or failed as `passed` says.
    pub fn judged(
        check: &str,
        passed: bool,
        expected: impl Into<String>,
        seen: impl Into<String>,
    ) -> Self {
        Self {
            passed,
            ..Self::pass(check, expected, seen)
        }
    }
}

/// The checks of one part, and its score.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartReport {
    /// The part.
    pub part: Part,
    /// Its checks, in the order they were made.
    pub checks: Vec<Check>,
    /// Checks passed.
    pub passed: usize,
    /// Checks made.
    pub total: usize,
}

impl PartReport {
    /// The report of `part` from its checks.
    pub fn new(part: Part, checks: Vec<Check>) -> Self {
        Self {
            part,
            passed: checks.iter().filter(|check| check.passed).count(),
            total: checks.len(),
            checks,
        }
    }
}

/// Everything `lab mark` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The command marked, as given.
    pub command: String,
    /// The deadlines the checks had, for the reader of a ✘.
    pub deadlines: Deadlines,
    /// The parts marked, in the sheet's order.
    pub parts: Vec<PartReport>,
    /// Checks passed in all.
    pub passed: usize,
    /// Checks made in all.
    pub total: usize,
}

/// The deadlines of the checks, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Deadlines {
    /// From starting the factory to its subscription.
    pub start_s: f64,
    /// For every other check: answers, publishes, completions.
    pub check_s: f64,
    /// For one call of the broker to the factory.
    pub call_s: f64,
    /// From SIGINT to SIGKILL when the factory is stopped.
    pub stop_s: f64,
}

impl Eq for Deadlines {}

impl Report {
    /// The report of `parts`.
    pub fn new(command: &str, deadlines: Deadlines, parts: Vec<PartReport>) -> Self {
        Self {
            command: command.to_owned(),
            deadlines,
            passed: parts.iter().map(|part| part.passed).sum(),
            total: parts.iter().map(|part| part.total).sum(),
            parts,
        }
    }

    /// Whether every check passed.
    pub fn all_passed(&self) -> bool {
        self.passed == self.total
    }

    /// The check named `check` of `part`, if it was made.
    pub fn check(&self, part: Part, check: &str) -> Option<&Check> {
        self.parts
            .iter()
            .filter(|report| report.part == part)
            .flat_map(|report| &report.checks)
            .find(|made| made.check == check)
    }

    /// One JSON object, for a grade sheet.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    }
}

/// The text report: a line per check, then a score per part and the total.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Deadlines {
            start_s,
            check_s,
            call_s,
            stop_s,
        } = self.deadlines;
        writeln!(f, "Marking: {}", self.command)?;
        writeln!(
            f,
            "Deadlines: {start_s}s to subscribe after a start, {check_s}s for each check, \
             {call_s}s for a call, {stop_s}s from SIGINT to SIGKILL"
        )?;
        for part in &self.parts {
            writeln!(f)?;
            for check in &part.checks {
                let (mark, evidence) = if check.passed {
                    ("✔", check.seen.clone())
                } else {
                    (
                        "✘",
                        format!("expected {}; seen {}", check.expected, check.seen),
                    )
                };
                writeln!(
                    f,
                    "Part {:<3} {mark} {}: {evidence}",
                    part.part, check.check
                )?;
            }
        }
        writeln!(f)?;
        for part in &self.parts {
            writeln!(f, "Part {}: {}/{}", part.part, part.passed, part.total)?;
        }
        write!(f, "Total: {}/{}", self.passed, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report::new(
            "./factory --port {port}",
            Deadlines {
                start_s: 60.0,
                check_s: 5.0,
                call_s: 2.0,
                stop_s: 5.0,
            },
            vec![
                PartReport::new(
                    Part::One,
                    vec![
                        Check::pass("subscribes", "a subscription", "127.0.0.1:1"),
                        Check::fail(
                            "multiplies",
                            "408",
                            "Factory.Multiply of 12 and 34: expected 408, got 46",
                        ),
                    ],
                ),
                PartReport::new(Part::TwoA, vec![Check::pass("divides", "3", "3")]),
            ],
        )
    }

    #[test]
    fn the_text_has_a_line_per_check_and_a_score_per_part() {
        let text = report().to_string();
        assert!(
            text.contains("Part 1   ✔ subscribes: 127.0.0.1:1"),
            "{text}"
        );
        assert!(
            text.contains("Part 1   ✘ multiplies: expected 408; seen Factory.Multiply of 12 and 34: expected 408, got 46"),
            "{text}"
        );
        assert!(
            text.contains("Part 1: 1/2\nPart 2a: 1/1\nTotal: 2/3"),
            "{text}"
        );
        assert!(!report().all_passed());
    }

    #[test]
    fn the_json_has_the_grade_sheet_shape() {
        let json: serde_json::Value = serde_json::from_str(&report().to_json()).unwrap();
        assert_eq!(json["passed"], 2);
        assert_eq!(json["total"], 3);
        assert_eq!(json["parts"][0]["part"], "1");
        assert_eq!(json["parts"][0]["passed"], 1);
        assert_eq!(json["parts"][0]["total"], 2);
        assert_eq!(json["parts"][1]["part"], "2a");
        let check = &json["parts"][0]["checks"][1];
        assert_eq!(check["check"], "multiplies");
        assert_eq!(check["passed"], false);
        assert_eq!(check["expected"], "408");
        assert!(check["seen"].as_str().unwrap().contains("got 46"));
    }
}
