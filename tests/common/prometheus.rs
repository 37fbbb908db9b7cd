//! Prometheus expositions in tests: linted by Prometheus' own `promtool check metrics`, and
//! read into samples to check that counters moved as the requests did.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Where `promtool` is: `$PROMTOOL`, or on the `PATH` (`scripts/test.sh` extracts it from
/// Debian's `prometheus` package and exports `PROMTOOL`).
pub fn promtool() -> String {
    super::external_tool(
        "PROMTOOL",
        "promtool",
        "extract promtool from Debian's `prometheus` package",
    )
}

/// Lints one exposition with `promtool check metrics`; panics with its findings.
pub fn lint(exposition: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics found problems:\n{}{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// The samples of an exposition: (name, labels) to value.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

pub fn parse(exposition: &str) -> Samples {
    let mut samples = Samples::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        // Our label values are plain words: no commas, quotes or escapes to care about.
        let labels = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap();
                (key.to_owned(), value.trim_matches('"').to_owned())
            })
            .collect();
        samples.insert((name.to_owned(), labels), value.parse().unwrap());
    }
    samples
}

/// The value of the series `name` with exactly `labels`, 0 when it was never recorded.
pub fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    samples
        .get(&(name.to_owned(), labels))
        .copied()
        .unwrap_or(0.0)
}
