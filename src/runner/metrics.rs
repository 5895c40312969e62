//! `/metrics` in Prometheus' text format: a table of metric families, each a name, a type, a
//! help line and how its samples are read off one [`Scrape`]. Adding a metric is a row here
//! (and a line in `docs/operating.md`, which the page test checks against this output).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::board::{Board, JournalCounts};
use crate::journal::head::Head;
use crate::machine::State;

/// Upper bounds of the step duration histogram, in seconds.
pub const STEP_BUCKETS_S: [f64; 11] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Upper bounds of the per-model evaluation histogram, in seconds (N's timeout is 720).
pub const EVAL_BUCKETS_S: [f64; 11] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 720.0,
];

/// Durations this process observed, in Prometheus' cumulative buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn samples(&self, out: &mut Samples<'_>) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            out.sample("_bucket", &format!("le=\"{bound}\""), count);
        }
        out.sample("_bucket", "le=\"+Inf\"", self.count);
        out.sample("_sum", "", float(self.sum));
        out.sample("_count", "", self.count);
    }
}

/// Everything one scrape reads, gathered once under the monitor's lock.
pub struct Scrape<'a> {
    /// Whether `/healthz` answers 200.
    pub healthy: bool,
    /// The state as last folded.
    pub state: &'a State,
    /// What operators see, folded from the journal.
    pub board: &'a Board,
    /// The journal's counters.
    pub counts: &'a JournalCounts,
    /// The chain's head as last read.
    pub head_block: Option<u64>,
    /// The journal's head after the latest write.
    pub journal_head: Option<&'a Head>,
    /// Durations of the steps this process completed.
    pub step_seconds: &'a Histogram,
    /// Durations of the evaluations this process ran.
    pub eval_seconds: &'a Histogram,
    /// Chain calls by name: (calls, errors).
    pub chain_calls: &'a BTreeMap<&'static str, (u64, u64)>,
    /// Head less the last inclusion (or this run's first head).
    pub blocks_since_weights: Option<u64>,
    /// Fetches under way or waiting for a retry.
    pub fetch_queue: Option<usize>,
    /// Bytes in the model cache, as last computed.
    pub cache_bytes: u64,
    /// Free bytes on the cache's disk.
    pub disk_free: Option<u64>,
    /// Whether the last append to the step log failed.
    pub step_log_failed: bool,
}

/// The samples of one family as they are written: `NAME[SUFFIX][{LABELS}] VALUE` lines.
struct Samples<'a> {
    name: &'static str,
    out: &'a mut String,
}

impl Samples<'_> {
    fn sample(&mut self, suffix: &str, labels: &str, value: impl std::fmt::Display) {
        let name = self.name;
        let _ = if labels.is_empty() {
            writeln!(self.out, "{name}{suffix} {value}")
        } else {
            writeln!(self.out, "{name}{suffix}{{{labels}}} {value}")
        };
    }
}

/// One metric family.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: fn(&Scrape<'_>, &mut Samples<'_>),
}

/// Every family, in the order `/metrics` lists them.
const FAMILIES: &[Family] = &[
    Family {
        name: "validator_build_info",
        kind: "gauge",
        help: "The validator's build: version and journal schema.",
        samples: |_, out| {
            let labels = format!(
                "version=\"{}\",schema=\"{}\"",
                env!("CARGO_PKG_VERSION"),
                crate::machine::SCHEMA_VERSION
            );
            out.sample("", &labels, 1);
        },
    },
    Family {
        name: "validator_healthy",
        kind: "gauge",
        help: "1 while /healthz answers 200, else 0.",
        samples: |scrape, out| out.sample("", "", u8::from(scrape.healthy)),
    },
    Family {
        name: "validator_chain_head_block",
        kind: "gauge",
        help: "The chain's head as last read.",
        samples: |scrape, out| {
            if let Some(head) = scrape.head_block {
                out.sample("", "", head);
            }
        },
    },
    Family {
        name: "validator_journal_block",
        kind: "gauge",
        help: "The block of the journal's last record.",
        samples: |scrape, out| {
            if let Some(position) = scrape.state.position {
                out.sample("", "", position.block);
            }
        },
    },
    Family {
        name: "validator_journal_records_total",
        kind: "counter",
        help: "Records in the journal.",
        samples: |scrape, out| out.sample("", "", scrape.counts.records),
    },
    Family {
        name: "validator_journal_head_info",
        kind: "gauge",
        help: "The journal's head (records, last position, hash chain), as replay prints the head it verified.",
        samples: |scrape, out| {
            if let Some(head) = scrape.journal_head {
                let (block, seq) = head.last.map_or((String::new(), String::new()), |p| {
                    (p.block.to_string(), p.seq.to_string())
                });
                let labels = format!(
                    "records=\"{}\",block=\"{block}\",seq=\"{seq}\",chain_sha256=\"{}\"",
                    head.records,
                    label(&head.chain_sha256)
                );
                out.sample("", &labels, 1);
            }
        },
    },
    Family {
        name: "validator_steps_completed",
        kind: "gauge",
        help: "Completed steps (the next step's number).",
        samples: |scrape, out| out.sample("", "", scrape.state.step_next),
    },
    Family {
        name: "validator_steps_total",
        kind: "counter",
        help: "Steps ended, by competition and outcome (completed, abandoned, failed).",
        samples: |scrape, out| {
            for ((competition, end), count) in &scrape.counts.steps {
                let labels = format!(
                    "competition=\"{}\",outcome=\"{}\"",
                    label(competition),
                    end.as_str()
                );
                out.sample("", &labels, count);
            }
        },
    },
    Family {
        name: "validator_step_duration_seconds",
        kind: "histogram",
        help: "Duration of each completed step run by this process.",
        samples: |scrape, out| scrape.step_seconds.samples(out),
    },
    Family {
        name: "validator_model_evaluation_duration_seconds",
        kind: "histogram",
        help: "Duration of each model's evaluation in this process (child start, session, scoring).",
        samples: |scrape, out| scrape.eval_seconds.samples(out),
    },
    Family {
        name: "validator_evaluations_total",
        kind: "counter",
        help: "Model evaluations journaled, by outcome (losses, failed).",
        samples: |scrape, out| {
            for (outcome, count) in &scrape.counts.evaluations {
                out.sample("", &format!("outcome=\"{outcome}\""), count);
            }
        },
    },
    Family {
        name: "validator_models_verified_total",
        kind: "counter",
        help: "Models verified.",
        samples: |scrape, out| out.sample("", "", scrape.counts.models_verified),
    },
    Family {
        name: "validator_models_rejected_total",
        kind: "counter",
        help: "Models rejected, by rejection code.",
        samples: |scrape, out| {
            for (code, count) in &scrape.counts.models_rejected {
                out.sample("", &format!("code=\"{}\"", label(code)), count);
            }
        },
    },
    Family {
        name: "validator_fetch_queue_length",
        kind: "gauge",
        help: "Model fetches under way or waiting for a retry.",
        samples: |scrape, out| {
            if let Some(queue) = scrape.fetch_queue {
                out.sample("", "", queue);
            }
        },
    },
    Family {
        name: "validator_eval_set_size",
        kind: "gauge",
        help: "Uids in each competition's eval set.",
        samples: |scrape, out| {
            for (id, competition) in &scrape.state.competitions {
                let labels = format!("competition=\"{}\"", label(id.as_str()));
                out.sample("", &labels, competition.eval_set.len());
            }
        },
    },
    Family {
        name: "validator_pending_size",
        kind: "gauge",
        help: "Uids waiting to join each competition's eval set.",
        samples: |scrape, out| {
            for (id, competition) in &scrape.state.competitions {
                let labels = format!("competition=\"{}\"", label(id.as_str()));
                out.sample("", &labels, competition.pending.len());
            }
        },
    },
    Family {
        name: "validator_uid_win_rate",
        kind: "gauge",
        help: "Each uid's win rate at its competition's latest step.",
        samples: |scrape, out| {
            for (labels, point) in uid_points(scrape) {
                out.sample("", &labels, float(point.win_rate));
            }
        },
    },
    Family {
        name: "validator_uid_loss_mean",
        kind: "gauge",
        help: "Each uid's mean loss at its competition's latest step (+Inf: no losses).",
        samples: |scrape, out| {
            for (labels, point) in uid_points(scrape) {
                out.sample("", &labels, float(point.loss_mean.unwrap_or(f64::INFINITY)));
            }
        },
    },
    Family {
        name: "validator_uid_weight",
        kind: "gauge",
        help: "Each uid's weight now.",
        samples: |scrape, out| {
            for (labels, point) in uid_points(scrape) {
                let weight = crate::board::weight_of(&scrape.state.weights, point.uid);
                out.sample("", &labels, float(weight));
            }
        },
    },
    Family {
        name: "validator_weight_submissions_total",
        kind: "counter",
        help: "Weight submissions answered, by method and outcome.",
        samples: |scrape, out| {
            for ((method, outcome), count) in &scrape.counts.weights {
                let labels = format!("method=\"{method}\",outcome=\"{outcome}\"");
                out.sample("", &labels, count);
            }
        },
    },
    Family {
        name: "validator_blocks_since_weights_included",
        kind: "gauge",
        help: "Head less the block the last weights were included in (or this run's first head, before any).",
        samples: |scrape, out| {
            if let Some(blocks) = scrape.blocks_since_weights {
                out.sample("", "", blocks);
            }
        },
    },
    Family {
        name: "validator_chain_calls_total",
        kind: "counter",
        help: "Chain calls made, by call.",
        samples: |scrape, out| {
            for (call, (calls, _)) in scrape.chain_calls {
                out.sample("", &format!("call=\"{call}\""), calls);
            }
        },
    },
    Family {
        name: "validator_chain_errors_total",
        kind: "counter",
        help: "Chain calls that failed, by call.",
        samples: |scrape, out| {
            for (call, (_, errors)) in scrape.chain_calls {
                out.sample("", &format!("call=\"{call}\""), errors);
            }
        },
    },
    Family {
        name: "validator_model_cache_bytes",
        kind: "gauge",
        help: "Bytes in the model cache.",
        samples: |scrape, out| out.sample("", "", scrape.cache_bytes),
    },
    Family {
        name: "validator_disk_free_bytes",
        kind: "gauge",
        help: "Free bytes on the model cache's disk.",
        samples: |scrape, out| {
            if let Some(free) = scrape.disk_free {
                out.sample("", "", free);
            }
        },
    },
    Family {
        name: "validator_step_log_errors",
        kind: "gauge",
        help: "1 when the last append to the step log failed.",
        samples: |scrape, out| out.sample("", "", u8::from(scrape.step_log_failed)),
    },
];

/// Each uid at its competition's latest step, with its labels.
fn uid_points<'a>(
    scrape: &'a Scrape<'_>,
) -> impl Iterator<Item = (String, &'a crate::board::UidPoint)> {
    scrape.board.latest().flat_map(|(competition, last)| {
        let id = label(competition);
        last.uids
            .iter()
            .map(move |point| (format!("competition=\"{id}\",uid=\"{}\"", point.uid), point))
    })
}

/// `/metrics` for `scrape`: every family's help, type and samples.
pub fn render(scrape: &Scrape<'_>) -> String {
    let mut out = String::new();
    for family in FAMILIES {
        let name = family.name;
        let _ = writeln!(
            out,
            "# HELP {name} {}\n# TYPE {name} {}",
            family.help, family.kind
        );
        (family.samples)(
            scrape,
            &mut Samples {
                name,
                out: &mut out,
            },
        );
    }
    out
}

/// A sample value as the text format writes it.
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

/// A label value, escaped as the text format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family is named once, with a known type, and lists no sample of another name.
    #[test]
    fn the_families_are_distinct_and_well_formed() {
        let mut names = std::collections::BTreeSet::new();
        for family in FAMILIES {
            assert!(names.insert(family.name), "{} twice", family.name);
            assert!(["gauge", "counter", "histogram"].contains(&family.kind));
            assert!(family.name.starts_with("validator_"));
            assert!(family.help.ends_with('.'), "{}", family.name);
        }
        let state = State::default();
        let board = Board::new();
        let histogram = Histogram::new(&STEP_BUCKETS_S);
        let calls = BTreeMap::new();
        let scrape = Scrape {
            healthy: true,
            state: &state,
            board: &board,
            counts: board.counts(),
            head_block: Some(7),
            journal_head: None,
            step_seconds: &histogram,
            eval_seconds: &histogram,
            chain_calls: &calls,
            blocks_since_weights: None,
            fetch_queue: Some(0),
            cache_bytes: 12,
            disk_free: None,
            step_log_failed: false,
        };
        let text = render(&scrape);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = FAMILIES
                .iter()
                .find(|f| name.starts_with(f.name))
                .unwrap_or_else(|| panic!("{line}"));
            assert!(name == family.name || family.kind == "histogram", "{line}");
        }
        assert!(text.contains("validator_model_cache_bytes 12\n"));
        assert!(text.contains("validator_step_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
    }
}
