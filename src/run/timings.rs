//! `--timings`: wall time of each setup phase, printed as one JSON object
//! (phase -> microseconds) on stderr just before the job is exec'd.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Timings {
    enabled: bool,
    start: Instant,
    last: Instant,
    /// Microseconds of each phase.
    phases: Vec<(&'static str, u64)>,
    /// Words about the run, e.g. `"run": "warm"` or `"cold"` (whether it
    /// entered a warm mount) and how it entered (`"entered"`).
    labels: Vec<(&'static str, &'static str)>,
}

/// Whole microseconds of `d` in the u64 JSON takes; a duration past that
/// (584,000 years) saturates.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Timings {
    pub fn new(enabled: bool, start: Instant) -> Self {
        Timings {
            enabled,
            start,
            last: start,
            phases: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Close the phase that ran since the previous mark.
    pub fn mark(&mut self, phase: &'static str) {
        if self.enabled {
            let now = Instant::now();
            self.phases
                .push((phase, micros(now.duration_since(self.last))));
            self.last = now;
        }
    }

    /// Say whether the run was warm or cold (a `"run"` entry).
    pub fn set_run(&mut self, kind: &'static str) {
        self.label("run", kind);
    }

    /// Set the entry `key` to the word `value`.
    pub fn label(&mut self, key: &'static str, value: &'static str) {
        self.labels.retain(|(k, _)| *k != key);
        self.labels.push((key, value));
    }

    /// The JSON object, with a `total` entry (and `run`, when set).
    pub fn to_json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (phase, us) in &self.phases {
            map.insert((*phase).to_string(), serde_json::Value::from(*us));
        }
        let total = micros(Instant::now().duration_since(self.start));
        map.insert("total".into(), serde_json::Value::from(total));
        for (key, value) in &self.labels {
            map.insert((*key).into(), serde_json::Value::from(*value));
        }
        serde_json::Value::Object(map).to_string()
    }

    /// Print the breakdown to stderr when `--timings` was given.
    pub fn print(&self) {
        if self.enabled {
            eprintln!("{}", self.to_json());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_each_phase_and_total() {
        let mut t = Timings::new(true, Instant::now());
        t.mark("parse");
        t.mark("unshare");
        let v: serde_json::Value = serde_json::from_str(&t.to_json()).expect("json");
        assert!(v["parse"].is_u64() && v["unshare"].is_u64() && v["total"].is_u64());
        assert!(v.get("run").is_none());
        t.set_run("warm");
        t.label("entered", "anchor");
        t.set_run("cold");
        let v: serde_json::Value = serde_json::from_str(&t.to_json()).expect("json");
        assert_eq!(v["run"], "cold");
        assert_eq!(v["entered"], "anchor");
    }

    #[test]
    fn disabled_records_nothing() {
        let mut t = Timings::new(false, Instant::now());
        t.mark("parse");
        assert_eq!(t.to_json().matches(':').count(), 1);
    }
}
