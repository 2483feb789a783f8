//! End to end, the metrics of every component: `corral dev` with its cell and router,
//! an LRP with a route created with the CLI, a request sent through the router, then
//! each `/metrics` endpoint (server, cell, router) fetched as Prometheus would, checked
//! with `promtool check metrics` (no finding allowed), and searched for the series that
//! what happened must have moved. Also the cell's `GET /v1/usage`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Answer, DEADLINE, DevCell, http_get, is_root, json, ok, poll_for, poll_for_explained,
};

/// Long enough for a cold start of instances on a busy 2-core machine.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
const HOST: &str = "web.metrics.test";

/// One `GET` with `Host: host` and the bearer token when one is given.
fn get(addr: &str, host: &str, path: &str, token: Option<&str>) -> Answer {
    http_get(addr, host, path, token)
}

/// `http://host:port` -> `host:port`.
fn authority(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

/// The sum of the samples of `name` whose labels include every one of `labels`
/// (`key="value"`); `None` when there is none.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let have: Vec<&str> = label_text.split(',').collect();
        if labels.iter().all(|l| have.contains(l))
            && let Ok(value) = value.parse::<f64>()
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Runs `promtool check metrics` on `text`: it must pass and say nothing.
fn promtool_check(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("run promtool (Debian package prometheus; scripts/test installs it): {e}")
        });
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on the {what}'s /metrics: {} {said}\n--- metrics ---\n{text}",
        out.status
    );
}

fn home_token(home: &Path) -> String {
    std::fs::read_to_string(home.join("dev").join("token"))
        .expect("corral dev wrote its API token")
        .trim()
        .to_owned()
}

#[test]
fn every_component_serves_metrics_that_promtool_accepts() {
    // Real containers (their figures from cgroups) where the linux backend can run.
    let linux = is_root() && std::env::var("CORRAL_SKIP_LINUX_TESTS").as_deref() != Ok("1");
    let backend = if linux { "linux" } else { "process" };
    let all = DevCell::start(&["--backend", backend]);
    let api = authority(&all.dev().api).to_owned();
    let router = all.dev().router.clone().expect("dev runs a router");
    let home = all.home();
    let token = home_token(home);

    let cell = poll_for("the dev cell to join", RUN_DEADLINE, || {
        let cells: api::List<model::Cell> = json(home, &["cells", "--json"]);
        cells
            .items
            .into_iter()
            .find(|c| c.id.as_str() == "dev-cell")
            .map(|c| authority(&c.address).to_owned())
    });
    poll_for("the router to load its table", RUN_DEADLINE, || {
        let (status, _) = get(&router, "127.0.0.1", "/healthz", None).ok()?;
        (status == 200).then_some(())
    });

    let mut create = vec![
        "create",
        "web",
        "-i",
        "1",
        "--route",
        HOST,
        "--check",
        "http:8080/",
    ];
    let process_command = format!(
        "d={}/site && mkdir -p $d && echo hello > $d/index.html \
         && exec python3 -m http.server --bind 127.0.0.1 --directory $d $PORT",
        home.display()
    );
    if linux {
        create.extend([
            "--rootfs",
            "preloaded:busybox",
            "--",
            "sh",
            "-c",
            "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
        ]);
    } else {
        create.extend(["--", "sh", "-c", &process_command]);
    }
    ok(home, &create);
    poll_for_explained(
        "a request through the router to reach the instance",
        RUN_DEADLINE,
        || {
            let (status, body) = get(&router, HOST, "/", None).ok()?;
            (status == 200 && body.contains("hello")).then_some(())
        },
        || all.dev().log(),
    );

    // Without the token: refused, on every component.
    for (what, addr, host) in [
        ("server", api.as_str(), api.as_str()),
        ("cell", cell.as_str(), cell.as_str()),
        ("router", router.as_str(), "127.0.0.1"),
    ] {
        let (status, _) = get(addr, host, "/metrics", None).expect("an answer");
        assert_eq!(status, 401, "the {what}'s /metrics without the token");
    }

    let metrics = |what: &str, addr: &str, host: &str| -> String {
        let (status, body) = get(addr, host, "/metrics", Some(&token))
            .unwrap_or_else(|e| panic!("GET the {what}'s /metrics: {e}"));
        assert_eq!(status, 200, "the {what}'s /metrics: {body}");
        body
    };

    let server = poll_for(
        "the server's metrics to count the placement",
        DEADLINE,
        || {
            let text = metrics("server", &api, &api);
            let placed = sample(
                &text,
                "corral_placements_total",
                &[r#"work="instance""#, r#"result="placed""#],
            )?;
            (placed >= 1.0).then_some(text)
        },
    );
    promtool_check("server", &server);
    let created = sample(
        &server,
        "corral_api_requests_total",
        &[r#"method="POST""#, r#"route="/v1/lrps""#],
    );
    assert!(created >= Some(1.0), "POST /v1/lrps counted: {created:?}");
    let timed = sample(
        &server,
        "corral_api_request_duration_seconds_count",
        &[r#"method="POST""#, r#"route="/v1/lrps""#],
    );
    assert!(timed >= Some(1.0), "POST /v1/lrps timed: {timed:?}");
    let batches = sample(&server, "corral_scheduler_batch_size_count", &[]);
    assert!(batches >= Some(1.0), "a scheduling batch: {batches:?}");
    let passes = sample(&server, "corral_convergence_duration_seconds_count", &[]);
    assert!(passes >= Some(1.0), "a convergence pass: {passes:?}");
    // The scheduler gives the metrics its view of the cells at most once a second.
    poll_for(
        "the server's metrics to show the dev cell",
        DEADLINE,
        || {
            let text = metrics("server", &api, &api);
            let capacity = sample(
                &text,
                "corral_scheduler_cell_memory_capacity_bytes",
                &[r#"cell="dev-cell""#],
            )?;
            let reserved = sample(
                &text,
                "corral_scheduler_cell_containers_reserved",
                &[r#"cell="dev-cell""#],
            )?;
            (capacity > 0.0 && reserved >= 1.0).then_some(())
        },
    );

    let cell_text = poll_for(
        "the cell to sample the instance's container",
        DEADLINE,
        || {
            let text = metrics("cell", &cell, &cell);
            let memory = sample(
                &text,
                "corral_container_memory_bytes",
                &[r#"lrp="web""#, r#"index="0""#],
            )?;
            (memory > 0.0).then_some(text)
        },
    );
    promtool_check("cell", &cell_text);
    let held = sample(&cell_text, "corral_cell_containers", &[]);
    assert!(held >= Some(1.0), "the cell holds the container: {held:?}");
    let cpu = sample(
        &cell_text,
        "corral_container_cpu_seconds_total",
        &[r#"lrp="web""#],
    );
    assert!(cpu >= Some(0.0), "the container's CPU time: {cpu:?}");

    let (status, body) = get(&cell, &cell, "/v1/usage", Some(&token)).expect("GET /v1/usage");
    assert_eq!(status, 200, "{body}");
    let usage: api::CellUsage = serde_json::from_str(&body).expect("a CellUsage");
    assert_eq!(usage.cell.as_str(), "dev-cell");
    let web = usage
        .containers
        .values()
        .find(|c| matches!(&c.workload, api::Workload::Instance { lrp, index: 0, .. } if lrp.as_str() == "web"))
        .unwrap_or_else(|| panic!("web/0 in the cell's usage: {body}"));
    assert!(web.memory_bytes > 0, "{body}");

    let router_text = poll_for("the router to count the request", DEADLINE, || {
        let text = metrics("router", &router, "127.0.0.1");
        let served = sample(
            &text,
            "corral_router_requests_total",
            &[&format!(r#"route="{HOST}""#), r#"code="2xx""#],
        )?;
        (served >= 1.0).then_some(text)
    });
    promtool_check("router", &router_text);
    let timed = sample(
        &router_text,
        "corral_router_request_duration_seconds_count",
        &[&format!(r#"route="{HOST}""#)],
    );
    assert!(timed >= Some(1.0), "the routed request timed: {timed:?}");
    let propagated = sample(
        &router_text,
        "corral_router_route_propagation_seconds_count",
        &[],
    );
    assert!(
        propagated >= Some(1.0),
        "a change propagated: {propagated:?}"
    );
    let routes = sample(&router_text, "corral_router_http_routes", &[]);
    assert_eq!(routes, Some(1.0), "the one hostname routed");
}
