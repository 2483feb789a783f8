//! The cluster verbs: `cells` and `domains`.

use anyhow::{Context, Result};
use client::Client;
use model::{Cell, Domain, Timestamp};

use crate::cli::ReadArgs;
use crate::output::{self, print_json, render, table};

pub async fn cells(client: &Client, args: &ReadArgs) -> Result<()> {
    let cells = client.cells().await.context("list cells")?;
    if args.json {
        return print_json(&api::List { items: cells });
    }
    print!("{}", render_cells(&cells));
    Ok(())
}

pub async fn domains(client: &Client, args: &ReadArgs) -> Result<()> {
    let domains = client.domains().await.context("list domains")?;
    if args.json {
        return print_json(&api::List { items: domains });
    }
    print!("{}", render_domains(&domains, output::now()));
    Ok(())
}

pub fn render_cells(cells: &[Cell]) -> String {
    if cells.is_empty() {
        return "No cells have joined this cluster yet, so instances and tasks stay waiting \
                (UNCLAIMED, PENDING) until one does.\n"
            .to_owned();
    }
    let mut t = table([
        "CELL",
        "ZONE",
        "ADDRESS",
        "MEMORY",
        "DISK",
        "CONTAINERS",
        "ROOTFS",
    ]);
    for cell in cells {
        t.add_row([
            cell.id.to_string(),
            if cell.zone.is_empty() {
                "-".to_owned()
            } else {
                cell.zone.clone()
            },
            cell.address.clone(),
            format!("{} MB", cell.capacity.memory_mb),
            format!("{} MB", cell.capacity.disk_mb),
            cell.capacity.containers.to_string(),
            cell.rootfs_providers.join(", "),
        ]);
    }
    render(&t)
}

pub fn render_domains(domains: &[Domain], now: Timestamp) -> String {
    if domains.is_empty() {
        return "No domains have been declared fresh.\n".to_owned();
    }
    let mut t = table(["DOMAIN", "FRESH"]);
    for domain in domains {
        let fresh = match domain.expires_at {
            None => "forever".to_owned(),
            Some(at) if domain.is_fresh(now) => {
                format!("for {}s more", at.millis_since(now).div_ceil(1000))
            }
            Some(_) => "no (expired)".to_owned(),
        };
        t.add_row([domain.name.to_string(), fresh]);
    }
    render(&t)
}

#[cfg(test)]
mod tests {
    use model::{CellCapacity, Name};

    use super::*;

    #[test]
    fn tables() {
        let name = |s: &str| Name::parse("name", s).expect("valid");
        let cell = Cell {
            id: name("cell-1"),
            address: "http://10.0.0.7:7071".into(),
            zone: "z1".into(),
            capacity: CellCapacity {
                memory_mb: 4096,
                disk_mb: 20480,
                containers: 256,
            },
            rootfs_providers: vec!["host".into(), "docker".into()],
            placement_tags: vec![],
            optional_placement_tags: vec![],
            attributes: Default::default(),
            evacuating: false,
        };
        assert_eq!(
            render_cells(&[cell]),
            "\
CELL    ZONE  ADDRESS               MEMORY   DISK      CONTAINERS  ROOTFS
cell-1  z1    http://10.0.0.7:7071  4096 MB  20480 MB  256         host, docker
"
        );
        let domains = [
            Domain {
                name: name("cf"),
                expires_at: None,
            },
            Domain {
                name: name("apps"),
                expires_at: Some(Timestamp(10_500)),
            },
            Domain {
                name: name("old"),
                expires_at: Some(Timestamp(1_000)),
            },
        ];
        assert_eq!(
            render_domains(&domains, Timestamp(5_000)),
            "\
DOMAIN  FRESH
cf      forever
apps    for 6s more
old     no (expired)
"
        );
    }
}
