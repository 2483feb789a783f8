//! `corral visualize`: every cell as a row of marks, one per instance it holds, coloured
//! by state, redrawn every second, as `ltc visualize` drew Diego's cells.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use client::Client;
use model::{Cell, Instance, InstanceState, Lrp, Presence, Timestamp};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::VisualizeArgs;
use crate::output::{self, utc};

/// Marks per line of a cell's row before it wraps.
const MARKS_PER_LINE: usize = 64;

pub async fn run(client: &Client, args: &VisualizeArgs) -> Result<()> {
    let colour = std::io::stdout().is_terminal() && !args.once;
    let mut interrupt = signal(SignalKind::interrupt()).context("listen for Ctrl-C")?;
    let every = Duration::from_millis(args.interval_ms.max(100));
    loop {
        let (cells, instances, lrps) = tokio::try_join!(
            client.cells(),
            client.all_instances(None),
            client.lrps(None)
        )
        .context("read the cluster")?;
        let frame = render(&cells, &instances, &lrps, colour, output::now());
        let mut out = std::io::stdout().lock();
        if colour {
            // Home and clear, then the frame: one write, so it does not flicker.
            write!(out, "\x1b[H\x1b[2J{frame}")?;
        } else {
            write!(out, "{frame}")?;
        }
        out.flush().context("write to standard output")?;
        drop(out);
        if args.once {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

/// How an instance shows: its mark without colour (for pipes and tests) and its colour.
fn mark(instance: &Instance) -> (char, &'static str) {
    match (instance.presence, instance.state) {
        (Presence::Evacuating, _) => ('E', "35"),
        (Presence::Suspect, _) => ('S', "31"),
        (_, InstanceState::Running) if instance.routable => ('R', "32"),
        (_, InstanceState::Running) => ('r', "32;2"),
        (_, InstanceState::Claimed) => ('C', "33"),
        (_, InstanceState::Unclaimed) => ('U', "37"),
        (_, InstanceState::Crashed) => ('X', "31"),
    }
}

fn paint(instance: &Instance, colour: bool) -> String {
    let (letter, code) = mark(instance);
    if colour {
        format!("\x1b[{code}m●\x1b[0m")
    } else {
        letter.to_string()
    }
}

/// One frame: a summary, a legend, each cell's row, and the instances no cell holds.
pub fn render(
    cells: &[Cell],
    instances: &[Instance],
    lrps: &[Lrp],
    colour: bool,
    now: Timestamp,
) -> String {
    let memory_of: HashMap<&str, u64> = lrps
        .iter()
        .map(|l| (l.spec.name.as_str(), l.spec.resources.memory_mb))
        .collect();
    let mut by_cell: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    let mut homeless = Vec::new();
    for instance in instances {
        match (&instance.key, instance.state) {
            (Some(key), InstanceState::Claimed | InstanceState::Running) => by_cell
                .entry(key.cell_id.as_str())
                .or_default()
                .push(instance),
            _ => homeless.push(instance),
        }
    }
    let count = |state| instances.iter().filter(|i| i.state == state).count();
    let mut out = format!(
        "{} cells, {} instances: {} running, {} starting, {} waiting for a cell, {} crashed   {} UTC\n",
        cells.len(),
        instances.len(),
        count(InstanceState::Running),
        count(InstanceState::Claimed),
        count(InstanceState::Unclaimed),
        count(InstanceState::Crashed),
        utc(now)
    );
    let legend: Vec<String> = [
        ("running", 'R', "32"),
        ("running, not ready", 'r', "32;2"),
        ("starting", 'C', "33"),
        ("evacuating", 'E', "35"),
        ("on a lost cell", 'S', "31"),
        ("waiting", 'U', "37"),
        ("crashed", 'X', "31"),
    ]
    .iter()
    .map(|(what, letter, code)| {
        if colour {
            format!("\x1b[{code}m●\x1b[0m {what}")
        } else {
            format!("{letter} {what}")
        }
    })
    .collect();
    out.push_str(&legend.join("  "));
    out.push_str("\n\n");
    let width = cells
        .iter()
        .map(|c| c.id.as_str().len())
        .chain([7])
        .max()
        .unwrap_or(7);
    for cell in cells {
        let mut held = by_cell.remove(cell.id.as_str()).unwrap_or_default();
        held.sort_by(|a, b| (&a.lrp, a.index).cmp(&(&b.lrp, b.index)));
        let memory: u64 = held
            .iter()
            .map(|i| memory_of.get(i.lrp.as_str()).copied().unwrap_or(0))
            .sum();
        let mut facts = format!(
            "{}/{} containers, {}/{} MB memory",
            held.len(),
            cell.capacity.containers,
            memory,
            cell.capacity.memory_mb
        );
        if !cell.zone.is_empty() {
            facts.push_str(&format!(", zone {}", cell.zone));
        }
        if cell.evacuating {
            facts.push_str(", DRAINING");
        }
        out.push_str(&format!("{:<width$}  {facts}\n", cell.id.as_str()));
        push_marks(&mut out, &held, width, colour);
    }
    // Instances on cells that are gone from the list (their presence expired).
    for (cell, held) in by_cell {
        out.push_str(&format!("{cell:<width$}  (not heard from)\n"));
        push_marks(&mut out, &held, width, colour);
    }
    if !homeless.is_empty() {
        out.push_str(&format!(
            "{:<width$}  {} not on a cell\n",
            "waiting",
            homeless.len()
        ));
        push_marks(&mut out, &homeless, width, colour);
    }
    out
}

fn push_marks(out: &mut String, instances: &[&Instance], indent: usize, colour: bool) {
    if instances.is_empty() {
        out.push_str(&format!("{:indent$}  -\n", ""));
        return;
    }
    for line in instances.chunks(MARKS_PER_LINE) {
        let marks: String = line.iter().map(|i| paint(i, colour)).collect();
        out.push_str(&format!("{:indent$}  {marks}\n", ""));
    }
}

#[cfg(test)]
mod tests {
    use model::{CellCapacity, InstanceKey, Name};

    use super::*;

    fn name(s: &str) -> Name {
        Name::parse("name", s).unwrap()
    }

    fn cell(id: &str) -> Cell {
        Cell {
            id: name(id),
            address: format!("http://{id}:1800"),
            zone: String::new(),
            capacity: CellCapacity {
                memory_mb: 1024,
                disk_mb: 4096,
                containers: 8,
            },
            rootfs_providers: vec![],
            placement_tags: vec![],
            optional_placement_tags: vec![],
            attributes: Default::default(),
            evacuating: false,
        }
    }

    fn instance(lrp: &str, index: u32, state: InstanceState, on: Option<&str>) -> Instance {
        let mut i = Instance::unclaimed(name(lrp), index, name("default"), Timestamp(0));
        i.state = state;
        i.routable = true;
        i.key = on.map(|c| InstanceKey {
            instance_id: format!("{lrp}-{index}"),
            cell_id: name(c),
        });
        i
    }

    fn lrp(n: &str, memory_mb: u64) -> Lrp {
        let create: api::LrpCreate = serde_json::from_value(serde_json::json!({
            "name": n, "action": {"run": {"path": "true"}},
            "resources": {"memory_mb": memory_mb},
        }))
        .unwrap();
        Lrp {
            spec: create.into_spec().unwrap(),
            generation: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn cells_show_one_mark_per_instance_by_state() {
        use InstanceState::*;
        let mut drained = cell("cell-b");
        drained.evacuating = true;
        drained.zone = "z2".into();
        let mut evacuating = instance("web", 1, Running, Some("cell-b"));
        evacuating.presence = Presence::Evacuating;
        let mut unready = instance("api", 0, Running, Some("cell-a"));
        unready.routable = false;
        let instances = vec![
            instance("web", 0, Running, Some("cell-a")),
            instance("web", 1, Claimed, Some("cell-a")),
            evacuating,
            unready,
            instance("web", 2, Unclaimed, None),
            instance("web", 3, Crashed, None),
            instance("old", 0, Running, Some("gone")),
        ];
        let frame = render(
            &[cell("cell-a"), drained, cell("cell-c")],
            &instances,
            &[lrp("web", 128), lrp("api", 256)],
            false,
            Timestamp(1_796_535_601_000),
        );
        let expect = "\
3 cells, 7 instances: 4 running, 1 starting, 1 waiting for a cell, 1 crashed   2026-12-06 05:40:01 UTC
R running  r running, not ready  C starting  E evacuating  S on a lost cell  U waiting  X crashed

cell-a   3/8 containers, 512/1024 MB memory
         rRC
cell-b   1/8 containers, 128/1024 MB memory, zone z2, DRAINING
         E
cell-c   0/8 containers, 0/1024 MB memory
         -
gone     (not heard from)
         R
waiting  2 not on a cell
         UX
";
        assert_eq!(frame, expect);
    }

    #[test]
    fn a_terminal_gets_coloured_dots_and_long_rows_wrap() {
        let instances: Vec<Instance> = (0..70)
            .map(|i| instance("web", i, InstanceState::Running, Some("cell-a")))
            .collect();
        let frame = render(&[cell("cell-a")], &instances, &[], true, Timestamp(0));
        let rows: Vec<&str> = frame.lines().skip(4).collect();
        assert_eq!(rows.len(), 2, "{frame}");
        assert_eq!(rows[0].matches('●').count(), MARKS_PER_LINE);
        assert_eq!(rows[1].matches('●').count(), 6);
        assert!(rows[0].contains("\x1b[32m●\x1b[0m"));
    }
}
