//! Table tests of the convergence rules: one small fixture per rule and boundary, with
//! the actions expected from one pass (see `common/mod.rs` for the fixture language).

mod common;

use common::check;

#[test]
fn expired_domains_are_pruned() {
    check(
        "
        domain cf
        domain soon expires_in=1ms
        domain old expires_in=0
        ",
        &["prune-domain old"],
    );
}

#[test]
fn missing_indices_are_created() {
    check(
        "
        cells c1
        domain cf
        lrp web 3 cf
        web/1 running@c1
        ",
        &["create web/0 in cf", "create web/2 in cf"],
    );
}

#[test]
fn creation_does_not_wait_for_a_fresh_domain() {
    // Only destructive steps are gated on freshness: a missing instance is always made.
    check(
        "
        lrp web 1 stale
        ",
        &["create web/0 in stale"],
    );
}

#[test]
fn an_index_held_only_by_non_ordinary_rows_still_gets_an_ordinary_one() {
    check(
        "
        cells c1
        domain cf
        lrp web 2 cf
        web/0 evacuating running@c1
        web/1 suspect running@c9
        ",
        &["create web/0 in cf", "create web/1 in cf"],
    );
}

#[test]
fn stale_unclaimed_instances_are_auctioned_again() {
    check(
        "
        domain cf
        lrp web 3 cf
        web/0 unclaimed age=30s gen=2
        web/1 unclaimed age=30001ms gen=3
        web/2 unclaimed age=0
        ",
        &["auction web/1@3 stale-unclaimed"],
    );
}

#[test]
fn crashed_instances_restart_on_diegos_schedule() {
    // Crash counts 0-2 restart at once; 3 waits 30 s, doubling to 16 min from count 8;
    // from 200 on never. The wait is measured from `since`, when the instance crashed.
    check(
        "
        domain cf
        lrp web 20 cf
        web/0 crashed crashes=0 age=0
        web/1 crashed crashes=1 age=0
        web/2 crashed crashes=2 age=0
        web/3 crashed crashes=3 age=29999ms
        web/4 crashed crashes=3 age=30s
        web/5 crashed crashes=4 age=59999ms
        web/6 crashed crashes=4 age=60s
        web/7 crashed crashes=7 age=479999ms
        web/8 crashed crashes=7 age=8m
        web/9 crashed crashes=8 age=959999ms
        web/10 crashed crashes=8 age=16m
        web/11 crashed crashes=50 age=16m
        web/12 crashed crashes=199 age=959999ms
        web/13 crashed crashes=199 age=16m
        web/14 crashed crashes=200 age=10h
        web/15 crashed crashes=4000 age=10h
        web/16 crashed@c9 crashes=3 age=1h
        web/17 crashed@c9 crashes=200 age=1h
        web/18 running@c1
        web/19 running@c1
        cells c1
        ",
        &[
            "auction web/0@1 crash-backoff-over",
            "auction web/1@1 crash-backoff-over",
            "auction web/2@1 crash-backoff-over",
            "auction web/4@1 crash-backoff-over",
            "auction web/6@1 crash-backoff-over",
            "auction web/8@1 crash-backoff-over",
            "auction web/10@1 crash-backoff-over",
            "auction web/11@1 crash-backoff-over",
            "auction web/13@1 crash-backoff-over",
            // A crashed row still naming a vanished cell is restarted like any other,
            // not made suspect: there is no container left to keep.
            "auction web/16@1 crash-backoff-over",
        ],
    );
}

#[test]
fn the_crash_policy_is_the_lrps() {
    check(
        "
        domain cf
        lrp eager 1 cf immediate=10
        lrp never 1 cf immediate=0 max_restarts=0
        lrp capped 1 cf max_restarts=5
        eager/0 crashed crashes=9 age=0
        never/0 crashed crashes=0 age=10h
        capped/0 crashed crashes=5 age=10h
        ",
        &["auction eager/0@1 crash-backoff-over"],
    );
}

#[test]
fn extra_instances_are_retired_in_fresh_domains() {
    check(
        "
        cells c1
        domain cf
        lrp web 1 cf
        web/0 running@c1
        web/1 running@c1 gen=4
        web/2 unclaimed gen=2
        web/3 suspect running@c1 gen=5
        web/3 evacuating running@c1 gen=6
        ",
        &[
            "retire web/1 ORDINARY@4 extra",
            "retire web/2 ORDINARY@2 extra",
            "remove web/3 SUSPECT@5 extra",
        ],
    );
}

#[test]
fn extra_instances_stay_while_the_domain_is_stale() {
    // Expired, and unknown: either way the client that owns the domain may not have
    // told us everything it wants yet.
    check(
        "
        cells c1
        domain cf expires_in=0
        lrp web 0 cf
        lrp api 0 unknown
        web/0 running@c1
        web/1 suspect running@c1
        api/0 crashed crashes=1
        ",
        &["prune-domain cf"],
    );
}

#[test]
fn orphans_are_retired_by_their_own_domain() {
    check(
        "
        cells c1
        domain cf
        domain old expires_in=0
        gone/0 running@c1 gen=3
        gone/1 suspect running@c1 gen=4
        gone/2 crashed crashes=300
        kept/0 running@c1 domain=old
        kept/1 suspect running@c1 domain=old
        kept/2 running@c1 domain=never-synced
        ",
        &[
            "prune-domain old",
            "retire gone/0 ORDINARY@3 orphaned",
            "remove gone/1 SUSPECT@4 orphaned",
            "retire gone/2 ORDINARY@1 orphaned",
        ],
    );
}

#[test]
fn instances_on_vanished_cells() {
    check(
        "
        cells c1
        domain cf
        lrp web 5 cf
        web/0 running@c9 gen=7       # no suspect yet: keep it as one, replace it
        web/1 claimed@c9 gen=3       # nothing serves yet: unclaim it
        web/2 running@c1             # fine
        web/3 unclaimed              # no cell at all
        web/4 claimed@c1
        ",
        &["mark-suspect web/0@7", "unclaim web/1@3"],
    );
}

#[test]
fn a_replacement_on_a_vanished_cell_is_unclaimed_while_the_suspect_is_kept() {
    check(
        "
        cells c1
        domain cf
        lrp web 3 cf
        web/0 suspect running@c8 gen=2
        web/0 running@c9 gen=5
        web/1 suspect running@c8 gen=2
        web/1 claimed@c9 gen=6
        web/2 suspect running@c8 gen=2
        web/2 claimed@c1 gen=6
        ",
        &["unclaim web/0@5", "unclaim web/1@6"],
    );
}

#[test]
fn a_suspect_whose_cell_returns_is_promoted_unless_replaced() {
    check(
        "
        cells c1 c2
        domain cf
        lrp web 6 cf
        web/0 suspect running@c1 gen=2
        web/0 unclaimed gen=5
        web/1 suspect running@c1 gen=2
        web/2 suspect running@c1 gen=2
        web/2 claimed@c2 gen=4
        web/3 suspect running@c1 gen=2
        web/3 running@c9 gen=4       # the replacement's own cell vanished
        web/4 suspect running@c1 gen=2
        web/4 crashed crashes=1 gen=3
        web/5 suspect running@c1 gen=2
        web/5 running@c2 gen=9       # replaced: the suspect goes
        ",
        &[
            "promote-suspect web/0@2 replacing ORDINARY@5",
            "promote-suspect web/1@2",
            "promote-suspect web/2@2 replacing ORDINARY@4",
            "promote-suspect web/3@2 replacing ORDINARY@4",
            "promote-suspect web/4@2 replacing ORDINARY@3",
            "remove web/5 SUSPECT@2 suspect-replaced",
        ],
    );
}

#[test]
fn a_suspect_on_a_vanished_cell_is_kept_until_its_replacement_runs() {
    check(
        "
        cells c1
        domain cf
        lrp web 4 cf
        web/0 suspect running@c9 gen=2
        web/0 running@c1 gen=8
        web/1 suspect running@c9 gen=2
        web/1 unclaimed gen=3
        web/2 suspect running@c9 gen=2
        web/2 unclaimed age=31s gen=3
        web/3 suspect claimed@c9 gen=2
        web/3 crashed crashes=0 gen=3
        ",
        &[
            "remove web/0 SUSPECT@2 suspect-replaced",
            "auction web/2@3 stale-unclaimed",
            "auction web/3@3 crash-backoff-over",
        ],
    );
}

#[test]
fn evacuating_rows_stay_while_their_replacement_is_pending() {
    // c1 drains; each index's copy there waits for its replacement, whatever state the
    // replacement is in. Convergence only looks after the replacement itself: a stale
    // UNCLAIMED one is auctioned again, one CLAIMED on a vanished cell is unclaimed, a
    // missing one is created. The EVACUATING rows themselves are never touched while
    // c1 lives: the draining cell ends each handoff.
    check(
        "
        cells c1 c2
        domain cf
        lrp web 6 cf
        web/0 evacuating running@c1
        web/0 unclaimed age=1s
        web/1 evacuating running@c1
        web/1 unclaimed age=31s gen=3
        web/2 evacuating running@c1
        web/2 claimed@c2
        web/3 evacuating running@c1
        web/3 claimed@c9 gen=5
        web/4 evacuating running@c1
        web/4 crashed crashes=3 age=1s
        web/5 evacuating running@c1
        ",
        &[
            "auction web/1@3 stale-unclaimed",
            "unclaim web/3@5",
            "create web/5 in cf",
        ],
    );
}

#[test]
fn evacuating_rows_go_when_their_cell_does() {
    check(
        "
        cells c1
        domain old expires_in=0
        lrp web 1 old
        web/0 running@c1
        web/0 evacuating running@c9 gen=4
        web/1 evacuating running@c9 gen=5    # extra, in a stale domain: still removed
        gone/0 evacuating running@c9 gen=6   # orphaned: still removed
        gone/1 evacuating running@c1
        ",
        &[
            "prune-domain old",
            "remove gone/0 EVACUATING@6 evacuating-cell-gone",
            "remove web/0 EVACUATING@4 evacuating-cell-gone",
            "remove web/1 EVACUATING@5 evacuating-cell-gone",
        ],
    );
}

#[test]
fn pending_tasks_expire_or_are_auctioned_again() {
    check(
        "
        task expired pending created=1800001ms updated=0 gen=2
        task limit pending created=30m updated=0
        task stale pending created=1m updated=30001ms gen=3
        task fresh pending created=1m updated=30s
        ",
        &[
            "fail-task expired@2: not started within time limit",
            "auction-task stale@3",
        ],
    );
}

#[test]
fn running_tasks_fail_when_their_cell_vanishes() {
    // Never retried: the task may have run already.
    check(
        "
        cells c1
        task fine running@c1 created=1h updated=1h
        task lost running@c9 gen=4
        task nowhere running
        ",
        &[
            "fail-task lost@4: cell disappeared before completion",
            "fail-task nowhere@1: cell disappeared before completion",
        ],
    );
}

#[test]
fn quiet_resolvers_are_kicked() {
    check(
        "
        task quiet resolving updated=30001ms gen=5
        task busy resolving updated=30s
        ",
        &["kick-task quiet@5"],
    );
}

#[test]
fn completed_tasks_are_called_back_then_deleted() {
    check(
        "
        task old completed completed=120001ms updated=120001ms callback gen=2
        task limit completed completed=120s updated=120s
        task call completed completed=31s updated=30001ms callback gen=3
        task wait completed completed=30s updated=30s callback
        task quiet completed completed=1m updated=1m
        ",
        &["resend-callback call@3", "delete-task old@2"],
    );
}

#[test]
fn output_is_sorted_by_row_key() {
    check(
        "
        cells c1
        domain cf
        domain zz expires_in=0
        domain aa expires_in=0
        lrp b 2 cf
        lrp a 1 cf
        task z running
        task a pending created=1h
        b/1 suspect running@c1 gen=2
        b/1 evacuating running@c9 gen=3
        ",
        &[
            "prune-domain aa",
            "prune-domain zz",
            "create a/0 in cf",
            "create b/0 in cf",
            "remove b/1 EVACUATING@3 evacuating-cell-gone",
            "promote-suspect b/1@2",
            "fail-task a@1: not started within time limit",
            "fail-task z@1: cell disappeared before completion",
        ],
    );
}
