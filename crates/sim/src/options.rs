//! How a fleet of simulated cells is set up: how many cells, what each offers, how its
//! containers behave, and where the server is.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use model::{Cell, CellCapacity, Name};

use crate::SimError;
use crate::rng::SimRng;

/// What each simulated cell offers unless told otherwise: a large machine.
pub const DEFAULT_CAPACITY: CellCapacity = CellCapacity {
    memory_mb: 65_536,
    disk_mb: 262_144,
    containers: 256,
};

/// The rootfs providers each cell advertises unless told otherwise.
pub const DEFAULT_ROOTFS_PROVIDERS: [&str; 3] = ["host", "busybox", "docker"];

/// The prefix of cell ids unless told otherwise: cells are `sim-0`, `sim-1`, ...
pub const DEFAULT_PREFIX: &str = "sim";

/// How long a simulated container takes to start unless told otherwise; about what a
/// real one takes with crun.
pub const DEFAULT_START_LATENCY: Latency = Latency::Fixed(Duration::from_millis(50));

/// How often the fleet reconciles with the server unless told otherwise.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(10);

/// A fleet of simulated cells. [`SimOptions::new`] gives the defaults.
#[derive(Clone, PartialEq)]
pub struct SimOptions {
    /// The Corral API the cells join (`http://host:port`).
    pub server: String,
    /// The API's bearer token.
    pub token: Option<String>,
    /// Where the fleet's own HTTP server listens for work; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How many cells.
    pub count: u32,
    /// Cells are named `{prefix}-{i}`.
    pub prefix: String,
    /// Cells are spread round-robin over `zone-0` .. `zone-{zones - 1}`.
    pub zones: u32,
    /// What each cell can hold.
    pub capacity: CellCapacity,
    pub rootfs_providers: Vec<String>,
    /// Tags every cell requires of its work.
    pub placement_tags: Vec<String>,
    /// How long a container takes from start to running. An LRP's `SIM_START_MS`
    /// overrides it.
    pub start_latency: Latency,
    /// The chance that a started instance crashes, drawn once per start.
    pub crash_probability: f64,
    /// How long after it is running an instance picked to crash does so.
    pub crash_after: Latency,
    /// Seeds the fleet's random draws; `None` picks one (the fleet reports it).
    pub seed: Option<u64>,
    /// How often to compare what runs here with what the server assigned here.
    pub reconcile_interval: Duration,
    /// Most reports in one request.
    pub report_batch: usize,
    /// How long a report may wait for others to share its request.
    pub report_delay: Duration,
    /// Most cells named in one heartbeat or assignments request. A fleet no larger
    /// than this speaks for all its cells in one request; a larger one splits them so
    /// that no request outgrows the server's body limit.
    pub cells_per_request: usize,
}

/// Shows everything but the token, so that logging options leaks no secret.
impl fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimOptions")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("listen", &self.listen)
            .field("count", &self.count)
            .field("prefix", &self.prefix)
            .field("zones", &self.zones)
            .field("capacity", &self.capacity)
            .field("rootfs_providers", &self.rootfs_providers)
            .field("placement_tags", &self.placement_tags)
            .field("start_latency", &self.start_latency)
            .field("crash_probability", &self.crash_probability)
            .field("crash_after", &self.crash_after)
            .field("seed", &self.seed)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("report_batch", &self.report_batch)
            .field("report_delay", &self.report_delay)
            .field("cells_per_request", &self.cells_per_request)
            .finish()
    }
}

impl SimOptions {
    /// `count` cells joining the API at `server`, with every other option at its
    /// default.
    pub fn new(server: impl Into<String>, count: u32) -> SimOptions {
        SimOptions {
            server: server.into(),
            token: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            count,
            prefix: DEFAULT_PREFIX.to_owned(),
            zones: 1,
            capacity: DEFAULT_CAPACITY,
            rootfs_providers: DEFAULT_ROOTFS_PROVIDERS.map(str::to_owned).to_vec(),
            placement_tags: Vec::new(),
            start_latency: DEFAULT_START_LATENCY,
            crash_probability: 0.0,
            crash_after: Latency::Uniform {
                min: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            seed: None,
            reconcile_interval: DEFAULT_RECONCILE_INTERVAL,
            report_batch: 1000,
            report_delay: Duration::from_millis(5),
            cells_per_request: 1000,
        }
    }

    /// The cells of this fleet, reachable at `address`, or the option at fault.
    pub fn cells(&self, address: &str) -> Result<Vec<Cell>, SimError> {
        let invalid = |field: &str, reason: &str| SimError::Invalid {
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        if self.count == 0 {
            return Err(invalid("count", "must be at least 1"));
        }
        if self.zones == 0 {
            return Err(invalid("zones", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.crash_probability) {
            return Err(invalid("crash_probability", "must be between 0 and 1"));
        }
        if self.reconcile_interval.is_zero() {
            return Err(invalid("reconcile_interval", "must be more than 0"));
        }
        if self.report_batch == 0 || self.cells_per_request == 0 {
            let field = if self.report_batch == 0 {
                "report_batch"
            } else {
                "cells_per_request"
            };
            return Err(invalid(field, "must be at least 1"));
        }
        // The last id is the longest: if it is a valid name, all are.
        Name::parse("prefix", &format!("{}-{}", self.prefix, self.count - 1))?;
        let cells: Vec<Cell> = (0..self.count)
            .map(|i| -> Result<Cell, SimError> {
                Ok(Cell {
                    id: Name::parse("prefix", &format!("{}-{i}", self.prefix))?,
                    address: address.to_owned(),
                    zone: format!("zone-{}", i % self.zones),
                    capacity: self.capacity,
                    rootfs_providers: self.rootfs_providers.clone(),
                    placement_tags: self.placement_tags.clone(),
                    optional_placement_tags: Vec::new(),
                    attributes: BTreeMap::from([("simulated".to_owned(), "true".to_owned())]),
                    evacuating: false,
                })
            })
            .collect::<Result<_, _>>()?;
        cells[0].validate()?;
        Ok(cells)
    }
}

/// How long something simulated takes: always the same, or drawn evenly from a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    Fixed(Duration),
    Uniform { min: Duration, max: Duration },
}

impl Latency {
    /// Draws one duration, in whole milliseconds.
    pub(crate) fn sample(&self, rng: &mut SimRng) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let (min, max) = (min.as_millis() as u64, max.as_millis() as u64);
                Duration::from_millis(min + rng.up_to(max.saturating_sub(min)))
            }
        }
    }
}

/// Milliseconds: `50` is always 50 ms, `20..200` is drawn evenly from 20 to 200 ms.
impl FromStr for Latency {
    type Err = String;

    fn from_str(s: &str) -> Result<Latency, String> {
        let ms = |part: &str| {
            part.trim().parse::<u64>().map_err(|_| {
                format!(
                    "expected milliseconds as MS or MIN..MAX (such as 50 or 20..200), not {s:?}"
                )
            })
        };
        match s.split_once("..") {
            None => Ok(Latency::Fixed(Duration::from_millis(ms(s)?))),
            Some((min, max)) => {
                let (min, max) = (ms(min)?, ms(max)?);
                if min > max {
                    return Err(format!("the range {s:?} ends before it starts"));
                }
                Ok(Latency::Uniform {
                    min: Duration::from_millis(min),
                    max: Duration::from_millis(max),
                })
            }
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::Fixed(d) => write!(f, "{} ms", d.as_millis()),
            Latency::Uniform { min, max } => {
                write!(f, "{}..{} ms", min.as_millis(), max.as_millis())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_parse() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Result<Latency, &str>)] = &[
            ("50", Ok(Latency::Fixed(ms(50)))),
            ("0", Ok(Latency::Fixed(ms(0)))),
            (
                "20..200",
                Ok(Latency::Uniform {
                    min: ms(20),
                    max: ms(200),
                }),
            ),
            (
                "5..5",
                Ok(Latency::Uniform {
                    min: ms(5),
                    max: ms(5),
                }),
            ),
            (
                "fast",
                Err(
                    "expected milliseconds as MS or MIN..MAX (such as 50 or 20..200), not \"fast\"",
                ),
            ),
            (
                "-1",
                Err("expected milliseconds as MS or MIN..MAX (such as 50 or 20..200), not \"-1\""),
            ),
            (
                "10..",
                Err(
                    "expected milliseconds as MS or MIN..MAX (such as 50 or 20..200), not \"10..\"",
                ),
            ),
            ("9..3", Err("the range \"9..3\" ends before it starts")),
        ];
        for (input, expect) in cases {
            let expect = expect.map_err(str::to_owned);
            assert_eq!(input.parse::<Latency>(), expect, "{input:?}");
        }
    }

    #[test]
    fn samples_stay_in_their_range() {
        let mut rng = SimRng::new(1);
        let range: Latency = "20..30".parse().expect("a range");
        for _ in 0..1000 {
            let d = range.sample(&mut rng).as_millis();
            assert!((20..=30).contains(&d), "{d}");
        }
        let fixed: Latency = "7".parse().expect("a number");
        assert_eq!(fixed.sample(&mut rng), Duration::from_millis(7));
    }

    #[test]
    fn cells_are_spread_over_zones() {
        let options = SimOptions {
            zones: 2,
            prefix: "rack".into(),
            ..SimOptions::new("http://127.0.0.1:1", 3)
        };
        let cells = options.cells("http://127.0.0.1:9").expect("valid options");
        let summary: Vec<_> = cells
            .iter()
            .map(|c| (c.id.as_str(), c.zone.as_str(), c.address.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("rack-0", "zone-0", "http://127.0.0.1:9"),
                ("rack-1", "zone-1", "http://127.0.0.1:9"),
                ("rack-2", "zone-0", "http://127.0.0.1:9"),
            ]
        );
        assert_eq!(cells[0].capacity, DEFAULT_CAPACITY);
        assert_eq!(cells[0].rootfs_providers, ["host", "busybox", "docker"]);
    }

    #[test]
    fn bad_options_name_the_field() {
        type Edit = fn(&mut SimOptions);
        let cases: &[(Edit, &str)] = &[
            (|o| o.count = 0, "count"),
            (|o| o.zones = 0, "zones"),
            (|o| o.crash_probability = 1.5, "crash_probability"),
            (
                |o| o.reconcile_interval = Duration::ZERO,
                "reconcile_interval",
            ),
            (|o| o.report_batch = 0, "report_batch"),
            (|o| o.cells_per_request = 0, "cells_per_request"),
            (|o| o.prefix = "a b".into(), "prefix"),
            (|o| o.prefix = "x".repeat(200), "prefix"),
            (
                |o| o.placement_tags = vec!["no spaces".into()],
                "placement_tags[0]",
            ),
        ];
        for (edit, field) in cases {
            let mut options = SimOptions::new("http://127.0.0.1:1", 2);
            edit(&mut options);
            match options.cells("http://127.0.0.1:9") {
                Err(SimError::Invalid { field: got, .. }) => assert_eq!(got, *field),
                other => panic!("expected {field} to be refused, got {other:?}"),
            }
        }
    }
}
