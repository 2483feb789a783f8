//! Table tests of the routing rules: a few changes in the fixture language (see
//! `common/mod.rs`) and the routing they lead to.

mod common;

use expect_test::{Expect, expect};
use routes::Table;

fn check(fixture: &str, expect: Expect) {
    let table = common::table(fixture);
    expect.assert_eq(&common::render(table.routing()));
    // Whatever order the changes came in, a full listing of the end state routes the
    // same.
    let rebuilt = Table::rebuild(table.lrps().cloned(), table.instances().cloned());
    assert_eq!(
        common::render(rebuilt.routing()),
        common::render(table.routing()),
        "a rebuild from the end state routes differently"
    );
}

#[test]
fn only_running_routable_instances_are_endpoints() {
    check(
        "
        lrp web http=web.test:8080
        web/0 running 10.0.0.1 8080:61000
        web/1 running 10.0.0.2 8080:61001 unready
        web/2 claimed
        web/3 unclaimed
        web/4 crashed
        web/5 running 10.0.0.3 8080:61002
        ",
        expect![[r#"
            web.test [web] -> 10.0.0.1:61000 (web/0), 10.0.0.3:61002 (web/5)
        "#]],
    );
}

#[test]
fn an_endpoint_is_the_host_port_of_the_routes_container_port() {
    check(
        "
        lrp web http=web.test:8080,admin.test:9000 tcp=5000:9000
        web/0 running 10.0.0.1 8080:61000 9000:61001
        web/1 running 10.0.0.2 8080:61002   # no mapping of 9000: not on admin or tcp
        web/2 running not-an-ip 8080:61003  # a router resolves nothing
        web/3 running 8080:61004            # no address
        ",
        expect![[r#"
            admin.test [web] -> 10.0.0.1:61001 (web/0)
            web.test [web] -> 10.0.0.1:61000 (web/0), 10.0.0.2:61002 (web/1)
            tcp 5000 [web] -> 10.0.0.1:61001 (web/0)
        "#]],
    );
}

#[test]
fn a_route_without_instances_stays_so_a_router_can_say_why() {
    check(
        "
        lrp web http=web.test:8080 tcp=5000:8080
        lrp idle
        ",
        expect![[r#"
            web.test [web] -> none
            tcp 5000 [web] -> none
        "#]],
    );
}

#[test]
fn evacuating_and_suspect_copies_serve_beside_their_replacements() {
    check(
        "
        lrp web http=web.test:8080
        web/0 evacuating running 10.0.0.1 8080:61000
        web/0 running 10.0.0.2 8080:61000
        web/1 suspect running 10.0.0.3 8080:61001
        web/1 claimed
        ",
        expect![[r#"
            web.test [web] -> 10.0.0.2:61000 (web/0), 10.0.0.1:61000 (web/0 evacuating), 10.0.0.3:61001 (web/1 suspect)
        "#]],
    );
    // The handoff ends: the evacuating copy is removed.
    check(
        "
        lrp web http=web.test:8080
        web/0 evacuating running 10.0.0.1 8080:61000
        web/0 running 10.0.0.2 8080:61000
        -web/0 evacuating
        ",
        expect![[r#"
            web.test [web] -> 10.0.0.2:61000 (web/0)
        "#]],
    );
}

#[test]
fn lrps_sharing_a_hostname_or_port_merge_their_endpoints() {
    check(
        "
        lrp blue http=web.test:8080 tcp=5000:8080
        lrp green http=WEB.test:8080 tcp=5000:8080
        blue/0 running 10.0.0.1 8080:61000
        green/0 running 10.0.0.2 8080:61000
        green/1 running 10.0.0.1 8080:61000   # the same address and port as blue/0
        ",
        expect![[r#"
            web.test [blue green] -> 10.0.0.1:61000 (blue/0), 10.0.0.2:61000 (green/0)
            tcp 5000 [blue green] -> 10.0.0.1:61000 (blue/0), 10.0.0.2:61000 (green/0)
        "#]],
    );
    // One of them goes: the other keeps the hostname.
    check(
        "
        lrp blue http=web.test:8080
        lrp green http=web.test:8080
        blue/0 running 10.0.0.1 8080:61000
        green/0 running 10.0.0.2 8080:61000
        -blue/0
        -lrp blue
        ",
        expect![[r#"
            web.test [green] -> 10.0.0.2:61000 (green/0)
        "#]],
    );
}

#[test]
fn changed_routes_move_the_endpoints() {
    check(
        "
        lrp web http=old.test:8080,*.apps.test:8080 gen=1
        web/0 running 10.0.0.1 8080:61000
        lrp web http=new.test:8080 tcp=6000:8080 gen=2
        ",
        expect![[r#"
            new.test [web] -> 10.0.0.1:61000 (web/0)
            tcp 6000 [web] -> 10.0.0.1:61000 (web/0)
        "#]],
    );
}

#[test]
fn instances_wait_for_their_lrp_and_leave_with_it() {
    // Instance events may come before their LRP's (a listing read in between).
    check(
        "
        web/0 running 10.0.0.1 8080:61000
        lrp web http=web.test:8080
        ",
        expect![[r#"
            web.test [web] -> 10.0.0.1:61000 (web/0)
        "#]],
    );
    check(
        "
        lrp web http=web.test:8080
        web/0 running 10.0.0.1 8080:61000
        -lrp web
        ",
        expect![""],
    );
}

#[test]
fn a_stale_or_repeated_event_changes_nothing() {
    // Generation 3 (seq 3) then generation 2 delivered late (seq 2).
    check(
        "
        lrp web http=web.test:8080
        web/0 running 10.0.0.1 8080:61000 gen=3 seq=3
        web/0 crashed gen=2 seq=2
        web/0 running 10.0.0.1 8080:61000 gen=3 seq=3
        ",
        expect![[r#"
            web.test [web] -> 10.0.0.1:61000 (web/0)
        "#]],
    );
    // A removal is not undone by an upsert from before it.
    check(
        "
        lrp web http=web.test:8080
        web/0 running 10.0.0.1 8080:61000 seq=5
        -web/0 seq=6
        web/0 running 10.0.0.1 8080:61000 seq=5
        ",
        expect![[r#"
            web.test [web] -> none
        "#]],
    );
    // A row removed and made anew starts at generation 1 again: the sequence number,
    // not the generation, orders events.
    check(
        "
        lrp web http=web.test:8080
        web/0 running 10.0.0.1 8080:61000 gen=7
        -web/0
        web/0 running 10.0.0.2 8080:61000 gen=1
        ",
        expect![[r#"
            web.test [web] -> 10.0.0.2:61000 (web/0)
        "#]],
    );
}

#[test]
fn wildcards_are_routes_of_their_own() {
    let table = common::table(
        "
        lrp web http=web.example.test:8080
        lrp apps http=*.example.test:8080
        web/0 running 10.0.0.1 8080:61000
        apps/0 running 10.0.0.2 8080:61000
        ",
    );
    let lookup = |host: &str| {
        table
            .routing()
            .http()
            .lookup(host)
            .map(|b| b.lrps[0].to_string())
    };
    assert_eq!(lookup("web.example.test").as_deref(), Some("web"));
    assert_eq!(lookup("Web.Example.Test:8080").as_deref(), Some("web"));
    assert_eq!(lookup("api.example.test").as_deref(), Some("apps"));
    assert_eq!(lookup("example.test"), None);
}

#[test]
fn listed_rows_ignore_buffered_events_they_are_newer_than() {
    // The listing was read after events 2 and 3 (generations 2 and 3) were written,
    // and the stream delivers them afterwards.
    let mut table = Table::rebuild(
        [common::lrp("web", &[("web.test", 8080)], &[], 1)],
        [common::instance(
            "web",
            0,
            model::Presence::Ordinary,
            model::InstanceState::Running,
            Some("10.0.0.1"),
            &[(8080, 61000)],
            true,
            3,
        )],
    );
    for (seq, change) in common::parse(
        "
        web/0 claimed gen=2 seq=2
        web/0 running 10.0.0.1 8080:61000 gen=3 seq=3
        web/0 claimed gen=2 seq=2   # the same event again
        ",
    ) {
        assert!(!table.apply(seq, change), "event {seq} changed the routing");
    }
    // A newer event applies.
    let (seq, change) = common::parse("web/0 crashed gen=4 seq=4").remove(0);
    assert!(table.apply(seq, change));
    expect![[r#"
        web.test [web] -> none
    "#]]
    .assert_eq(&common::render(table.routing()));
}

#[test]
fn tombstones_can_be_forgotten() {
    let mut table = common::table(
        "
        lrp web http=web.test:8080
        web/0 running 10.0.0.1 8080:61000
        -web/0
        -lrp web
        ",
    );
    table.forget_removed();
    assert_eq!(table.lrps().count(), 0);
    assert_eq!(table.instances().count(), 0);
    assert!(table.routing().http().is_empty());
}
