//! A tiny text format for auction tests: cells, work and events in, plans and usage out.
//!
//! One command a line; `#` starts a comment.
//!
//! ```text
//! cell a zone=z1 mem=1024 disk=4096 containers=10 rootfs=host,docker tags=gpu optional=ssd drivers=nfs
//! cell b evacuating                # draining: takes no new work
//! lrp web/0 mem=128 disk=0 rootfs=preloaded:host tags=gpu drivers=nfs
//! task t1 mem=64 rootfs=docker://x/y
//! add a lrp web/0                  # runs on a (`add a starting lrp web/0`: starting)
//! remove a lrp web/0               # left a (`remove a starting ...`: while starting)
//! started a                        # one starting container on a now runs
//! remove-cell a
//! place                            # places the work listed since the last `place`
//! usage                            # prints what each cell holds
//! ```
//!
//! A cell defaults to zone "", 1024 MB of memory and disk, 10 containers and the rootfs
//! providers host and docker; work defaults to 128 MB of memory, no disk and
//! `preloaded:host`. Work still listed at the end is placed.

use model::{Name, Rootfs};

use crate::{Capacity, CellView, Plan, Snapshot, Usage, Work, WorkId};

/// What the fixture drives: the real snapshot, or the naive reference.
pub(super) trait Auction {
    fn upsert_cell(&mut self, view: CellView);
    fn remove_cell(&mut self, id: &Name);
    fn add(&mut self, cell: &Name, work: &Work, starting: bool);
    fn remove(&mut self, cell: &Name, work: &Work, starting: bool);
    fn started(&mut self, cell: &Name);
    fn place(&mut self, work: &[Work]) -> Plan;
    fn usage(&self, id: &Name) -> Option<Usage>;
}

impl Auction for Snapshot {
    fn upsert_cell(&mut self, view: CellView) {
        Snapshot::upsert_cell(self, view);
    }
    fn remove_cell(&mut self, id: &Name) {
        Snapshot::remove_cell(self, id);
    }
    fn add(&mut self, cell: &Name, work: &Work, starting: bool) {
        Snapshot::add(self, cell, work, starting);
    }
    fn remove(&mut self, cell: &Name, work: &Work, starting: bool) {
        Snapshot::remove(self, cell, work, starting);
    }
    fn started(&mut self, cell: &Name) {
        Snapshot::started(self, cell);
    }
    fn place(&mut self, work: &[Work]) -> Plan {
        crate::place(self, work)
    }
    fn usage(&self, id: &Name) -> Option<Usage> {
        Snapshot::usage(self, id)
    }
}

/// Runs a fixture and returns what it printed.
pub(super) fn run(auction: &mut impl Auction, fixture: &str) -> String {
    let mut out = String::new();
    let mut cells: Vec<Name> = Vec::new();
    let mut batch: Vec<Work> = Vec::new();
    for (number, line) in fixture.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&command, args)) = words.split_first() else {
            continue;
        };
        let context = || format!("line {}: {line}", number + 1);
        match command {
            "cell" => {
                let view = parse_cell(args);
                if !cells.contains(&view.id) {
                    cells.push(view.id.clone());
                }
                auction.upsert_cell(view);
            }
            "lrp" | "task" => batch.push(parse_work(command, args)),
            "add" | "remove" => {
                let (cell, rest) = args
                    .split_first()
                    .unwrap_or_else(|| panic!("{}", context()));
                let (starting, rest) = match rest.split_first() {
                    Some((&"starting", rest)) => (true, rest),
                    _ => (false, rest),
                };
                let (&kind, rest) = rest
                    .split_first()
                    .unwrap_or_else(|| panic!("{}", context()));
                let work = parse_work(kind, rest);
                if command == "add" {
                    auction.add(&name(cell), &work, starting);
                } else {
                    auction.remove(&name(cell), &work, starting);
                }
            }
            "started" => auction.started(&name(args[0])),
            "remove-cell" => auction.remove_cell(&name(args[0])),
            "place" => out.push_str(&print_plan(&auction.place(&std::mem::take(&mut batch)))),
            "usage" => {
                for id in &cells {
                    if let Some(usage) = auction.usage(id) {
                        out.push_str(&print_usage(id, &usage));
                    }
                }
            }
            _ => panic!("unknown command: {}", context()),
        }
    }
    if !batch.is_empty() {
        out.push_str(&print_plan(&auction.place(&batch)));
    }
    out
}

pub(super) fn print_plan(plan: &Plan) -> String {
    let mut out = String::new();
    for placement in &plan.placed {
        out.push_str(&format!("{} -> {}\n", placement.work.id, placement.cell));
    }
    for (work, why) in &plan.unplaced {
        out.push_str(&format!("{} unplaced: {why}\n", work.id));
    }
    out
}

fn print_usage(id: &Name, usage: &Usage) -> String {
    let (used, total) = (usage.used, usage.total);
    format!(
        "{id}: memory {}/{} disk {}/{} containers {}/{} starting {} tasks {} instances {}\n",
        used.memory_mb,
        total.memory_mb,
        used.disk_mb,
        total.disk_mb,
        used.containers,
        total.containers,
        usage.starting,
        usage.tasks,
        usage.instances
    )
}

fn name(value: &str) -> Name {
    Name::parse("name", value).expect("fixture names are valid")
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `key=value` arguments.
fn pairs<'a>(args: &[&'a str]) -> impl Iterator<Item = (&'a str, &'a str)> {
    args.iter().map(|arg| {
        arg.split_once('=')
            .unwrap_or_else(|| panic!("expected key=value, got {arg:?}"))
    })
}

fn number<T: std::str::FromStr>(value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {value:?}"))
}

fn parse_cell(args: &[&str]) -> CellView {
    let (id, args) = args.split_first().expect("cell needs an id");
    let mut view = CellView {
        id: name(id),
        zone: String::new(),
        total: Capacity {
            memory_mb: 1024,
            disk_mb: 1024,
            containers: 10,
        },
        rootfs_providers: list("host,docker"),
        placement_tags: Vec::new(),
        optional_placement_tags: Vec::new(),
        volume_drivers: Vec::new(),
        evacuating: false,
    };
    let (flags, args): (Vec<&str>, Vec<&str>) = args.iter().partition(|arg| !arg.contains('='));
    for flag in flags {
        match flag {
            "evacuating" => view.evacuating = true,
            _ => panic!("unknown cell flag {flag:?}"),
        }
    }
    for (key, value) in pairs(&args) {
        match key {
            "zone" => view.zone = value.to_owned(),
            "mem" => view.total.memory_mb = number(value),
            "disk" => view.total.disk_mb = number(value),
            "containers" => view.total.containers = number(value),
            "rootfs" => view.rootfs_providers = list(value),
            "tags" => view.placement_tags = list(value),
            "optional" => view.optional_placement_tags = list(value),
            "drivers" => view.volume_drivers = list(value),
            _ => panic!("unknown cell attribute {key:?}"),
        }
    }
    view
}

fn parse_work(kind: &str, args: &[&str]) -> Work {
    let (id, args) = args.split_first().expect("work needs an id");
    let id = match kind {
        "lrp" => {
            let (lrp, index) = id.split_once('/').expect("an instance is lrp/index");
            WorkId::Lrp {
                lrp: name(lrp),
                index: number(index),
            }
        }
        "task" => WorkId::Task { id: name(id) },
        _ => panic!("work is lrp or task, not {kind:?}"),
    };
    let mut work = Work {
        id,
        memory_mb: 128,
        disk_mb: 0,
        rootfs: Rootfs::Preloaded("host".to_owned()),
        placement_tags: Vec::new(),
        volume_drivers: Vec::new(),
    };
    for (key, value) in pairs(args) {
        match key {
            "mem" => work.memory_mb = number(value),
            "disk" => work.disk_mb = number(value),
            "rootfs" => work.rootfs = Rootfs::parse("rootfs", value).expect("valid rootfs"),
            "tags" => work.placement_tags = list(value),
            "drivers" => work.volume_drivers = list(value),
            _ => panic!("unknown work attribute {key:?}"),
        }
    }
    work
}
