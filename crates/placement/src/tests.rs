//! Tests of the auction as data: each case is a fixture (see `fixture`) and the plan it
//! gives. Every case also runs on the naive reference, which must print the same.

mod fixture;
mod properties;
mod reference;

use expect_test::{Expect, expect};

use crate::Snapshot;

/// The scheduler keeps its snapshot across tasks and threads.
#[test]
fn snapshot_is_send_and_sync() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Snapshot>();
}

fn check(fixture: &str, expect: Expect) {
    let actual = fixture::run(&mut Snapshot::new(), fixture);
    let naive = fixture::run(&mut reference::Naive::default(), fixture);
    assert_eq!(actual, naive, "the index and the naive scan disagree");
    expect.assert_eq(&actual);
}

#[test]
fn instances_spread_across_cells() {
    check(
        "
        cell a
        cell b
        cell c
        lrp web/0
        lrp web/1
        lrp web/2
        lrp web/3
        ",
        expect![[r#"
            web/0 -> a
            web/1 -> b
            web/2 -> c
            web/3 -> a
        "#]],
    );
}

#[test]
fn instances_spread_across_zones_before_cells() {
    // Zone z1 has more room, but z2 holds no instance yet.
    check(
        "
        cell a zone=z1 mem=4096
        cell b zone=z1 mem=4096
        cell c zone=z2
        lrp web/0
        lrp web/1
        lrp web/2
        lrp web/3
        ",
        expect![[r#"
            web/0 -> a
            web/1 -> c
            web/2 -> b
            web/3 -> c
        "#]],
    );
}

#[test]
fn next_zone_tier_when_the_least_loaded_is_full() {
    // z2 holds fewer instances but has no room; z1 and z3 tie for the next tier.
    check(
        "
        cell a zone=z1
        cell b zone=z2 mem=100
        cell c zone=z3
        add a lrp web/0
        add c lrp web/1
        add b task other mem=0
        lrp web/2
        lrp web/3
        lrp web/4
        ",
        expect![[r#"
            web/2 -> a
            web/3 -> c
            web/4 -> a
        "#]],
    );
}

#[test]
fn resources_balance() {
    // The mean used fraction after the placement decides: b is the fullest on disk, but
    // the emptiest overall.
    check(
        "
        cell a
        cell b
        cell c
        add a lrp busy/0 mem=600 disk=600
        add b lrp busy/1 mem=100 disk=900
        add c lrp busy/2 mem=900 disk=200
        lrp web/0 mem=10 disk=10
        ",
        expect![[r#"
            web/0 -> b
        "#]],
    );
}

#[test]
fn fractions_not_amounts() {
    // large holds more memory than small, but a smaller fraction of its own.
    check(
        "
        cell small mem=1024 disk=1024
        cell large mem=4096 disk=4096
        add small lrp a/0 mem=256
        add large lrp b/0 mem=1024
        lrp c/0 mem=512
        ",
        expect![[r#"
            c/0 -> large
        "#]],
    );
}

#[test]
fn starting_containers_weigh_a_quarter() {
    // a is emptier, but two containers starting there add 0.5: more than the difference
    // in resources. Once they run, a wins again.
    check(
        "
        cell a containers=100
        cell b containers=100
        add a starting lrp other/0 mem=0
        add a starting lrp other/1 mem=0
        add b lrp busy/0 mem=512
        lrp web/0
        place
        remove b starting lrp web/0
        started a
        started a
        lrp web/0
        place
        ",
        expect![[r#"
            web/0 -> b
            web/0 -> a
        "#]],
    );
}

#[test]
fn tasks_go_by_task_count_then_resources() {
    // a is nearly empty but runs a task; b, c and d run none. d is in another zone,
    // which tasks ignore. Once each runs one, resources decide.
    check(
        "
        cell a zone=z1 mem=4096
        cell b zone=z1
        cell c zone=z1
        cell d zone=z2
        add a task old
        add b lrp busy/0 mem=512
        add c lrp busy/1 mem=256
        add d lrp busy/2 mem=768
        task t1
        task t2
        task t3
        task t4
        task t5
        ",
        expect![[r#"
            t1 -> c
            t2 -> b
            t3 -> d
            t4 -> a
            t5 -> c
        "#]],
    );
}

#[test]
fn same_lrp_instance_outweighs_resources() {
    // a holds web/0 and is otherwise empty; b is nearly full but holds none of web. Then
    // b has no room left.
    check(
        "
        cell a
        cell b
        add a lrp web/0 mem=0
        add b task big mem=896
        lrp web/1
        lrp web/2
        ",
        expect![[r#"
            web/1 -> b
            web/2 -> a
        "#]],
    );
}

#[test]
fn thousands_starting_outweigh_anti_affinity() {
    // 4004 containers starting on a weigh 1001: more than the 1000 of b's instance.
    let fixture = format!(
        "cell a containers=10000\ncell b containers=10000\nadd b lrp web/0\n{}lrp web/1",
        "add a starting task s mem=0\n".repeat(4004)
    );
    check(
        &fixture,
        expect![[r#"
        web/1 -> b
    "#]],
    );
}

#[test]
fn ties_go_to_the_first_id() {
    check(
        "
        cell c
        cell a
        cell b
        task t1
        lrp web/0
        ",
        expect![[r#"
            web/0 -> a
            t1 -> b
        "#]],
    );
}

#[test]
fn batch_order() {
    // Index 0 first, then tasks, then the rest by index; larger memory first within each.
    check(
        "
        cell a mem=100000 containers=100
        lrp web/2 mem=512
        task t-small mem=64
        lrp api/1 mem=64
        lrp web/1 mem=256
        lrp api/0 mem=64
        task t-large mem=1024
        lrp web/0 mem=256
        lrp worker/1 mem=1024
        task t-tie mem=64
        ",
        expect![[r#"
            web/0 -> a
            api/0 -> a
            t-large -> a
            t-small -> a
            t-tie -> a
            worker/1 -> a
            web/1 -> a
            api/1 -> a
            web/2 -> a
        "#]],
    );
}

#[test]
fn rootfs_filter() {
    check(
        "
        cell a rootfs=host
        cell b rootfs=docker
        cell c rootfs=oci,busybox
        lrp host/0 rootfs=preloaded:host
        lrp busybox/0 rootfs=preloaded:busybox
        lrp docker/0 rootfs=docker://registry.test/app:1
        lrp oci/0 rootfs=oci:/images/app
        task none rootfs=preloaded:cflinuxfs4
        ",
        expect![[r#"
            host/0 -> a
            busybox/0 -> c
            docker/0 -> b
            oci/0 -> c
            none unplaced: no cell has rootfs preloaded:cflinuxfs4
        "#]],
    );
}

#[test]
fn volume_driver_filter() {
    check(
        "
        cell a drivers=nfs
        cell b drivers=nfs,ceph
        cell c
        task both drivers=ceph,nfs
        task nfs drivers=nfs
        task none
        task smb drivers=smb
        task nfs-smb drivers=nfs,smb
        ",
        expect![[r#"
            both -> b
            nfs -> a
            none -> c
            smb unplaced: no cell has volume drivers [smb]
            nfs-smb unplaced: no cell has volume drivers [nfs, smb]
        "#]],
    );
}

#[test]
fn placement_tag_filter() {
    // a requires gpu; b requires gpu and may take ssd; c requires nothing and may take
    // ssd; d takes only untagged work.
    check(
        "
        cell a tags=gpu
        cell b tags=gpu optional=ssd
        cell c optional=ssd
        cell d
        task gpu tags=gpu
        task gpu-ssd tags=gpu,ssd
        task ssd tags=ssd
        task plain
        task fpga tags=fpga
        task gpu-fpga tags=gpu,fpga
        ",
        expect![[r#"
            gpu -> a
            gpu-ssd -> b
            ssd -> c
            plain -> d
            fpga unplaced: no cell matches placement tags [fpga]
            gpu-fpga unplaced: no cell matches placement tags [gpu, fpga]
        "#]],
    );
}

#[test]
fn filter_errors_in_order_of_precedence() {
    // A rootfs problem hides a driver problem, which hides a tag problem: the error
    // comes from the furthest any cell got.
    check(
        "
        cell a rootfs=host drivers=nfs tags=gpu
        cell b rootfs=docker
        task rootfs rootfs=oci:/x drivers=smb tags=ssd
        task drivers rootfs=preloaded:host drivers=smb tags=ssd
        task tags rootfs=preloaded:host drivers=nfs tags=ssd
        task drivers-on-b rootfs=docker://x/y drivers=nfs tags=gpu
        task untagged-on-a drivers=nfs
        ",
        expect![[r#"
            rootfs unplaced: no cell has rootfs oci:/x
            drivers unplaced: no cell has volume drivers [smb]
            tags unplaced: no cell matches placement tags [ssd]
            drivers-on-b unplaced: no cell has volume drivers [nfs]
            untagged-on-a unplaced: no cell matches placement tags []
        "#]],
    );
}

#[test]
fn evacuating_cells_take_no_new_work() {
    // a drains while holding web/0: it keeps its work (and its usage) but gets nothing
    // new; once every cell that could run something is draining, the reason says so.
    // A tag or rootfs problem is reported before it. When a stops draining, it takes
    // work again.
    check(
        "
        cell a zone=z1
        cell b zone=z2 mem=256
        add a lrp web/0
        cell a zone=z1 evacuating
        lrp web/1
        lrp web/2
        task gpu tags=gpu
        place
        cell b zone=z2 mem=256 evacuating
        lrp web/3
        place
        usage
        cell a zone=z1
        lrp web/3
        ",
        expect![[r#"
            web/1 -> b
            web/2 -> b
            gpu unplaced: no cell matches placement tags [gpu]
            web/3 unplaced: every cell that could run it is evacuating
            a: memory 128/1024 disk 0/1024 containers 1/10 starting 0 tasks 0 instances 1
            b: memory 256/256 disk 0/1024 containers 2/10 starting 2 tasks 0 instances 2
            web/3 -> a
        "#]],
    );
}

#[test]
fn no_cells() {
    check(
        "
        lrp web/0
        task t1
        ",
        expect![[r#"
            web/0 unplaced: no cells are available
            t1 unplaced: no cells are available
        "#]],
    );
}

#[test]
fn insufficient_lists_only_common_problems() {
    check(
        "
        cell a mem=256 disk=4096
        cell b mem=4096 disk=256
        cell c mem=4096 disk=4096 containers=1
        cell gpu mem=8192 disk=8192 tags=gpu   # filtered out: its room does not count
        add c task busy mem=0
        task memory mem=1024 disk=128
        task disk mem=128 disk=1024
        task both mem=1024 disk=1024
        task neither mem=128 disk=128
        task more-memory mem=5000 disk=128
        task more-of-both mem=5000 disk=5000
        ",
        expect![[r#"
            memory -> b
            disk -> a
            neither -> a
            more-memory unplaced: insufficient resources: memory
            more-of-both unplaced: insufficient resources: memory, disk
            both unplaced: insufficient resources
        "#]],
    );
}

#[test]
fn insufficient_containers() {
    check(
        "
        cell a containers=1
        cell b containers=1
        lrp web/0
        lrp web/1
        lrp web/2
        task t1 mem=2000
        ",
        expect![[r#"
            web/0 -> a
            web/1 -> b
            t1 unplaced: insufficient resources: memory
            web/2 unplaced: insufficient resources: containers
        "#]],
    );
}

#[test]
fn placements_in_a_batch_see_each_other() {
    // Each task takes 400 of a's and b's 1024: the fifth finds no room.
    check(
        "
        cell a
        cell b
        task t1 mem=400
        task t2 mem=400
        task t3 mem=400
        task t4 mem=400
        task t5 mem=400
        place
        usage
        ",
        expect![[r#"
            t1 -> a
            t2 -> b
            t3 -> a
            t4 -> b
            t5 unplaced: insufficient resources: memory
            a: memory 800/1024 disk 0/1024 containers 2/10 starting 2 tasks 2 instances 0
            b: memory 800/1024 disk 0/1024 containers 2/10 starting 2 tasks 2 instances 0
        "#]],
    );
}

#[test]
fn removed_work_frees_its_room() {
    check(
        "
        cell a mem=512
        lrp web/0 mem=512
        lrp web/1 mem=512
        place
        remove a starting lrp web/0 mem=512
        lrp web/1 mem=512
        place
        usage
        started a
        usage
        ",
        expect![[r#"
            web/0 -> a
            web/1 unplaced: insufficient resources: memory
            web/1 -> a
            a: memory 512/512 disk 0/1024 containers 1/10 starting 1 tasks 0 instances 1
            a: memory 512/512 disk 0/1024 containers 1/10 starting 0 tasks 0 instances 1
        "#]],
    );
}

#[test]
fn removed_cell_takes_its_work_along() {
    // After a goes, zone z1 holds no instance of web: web/2 goes there, to b.
    check(
        "
        cell a zone=z1
        cell b zone=z1
        cell c zone=z2
        lrp web/0
        lrp web/1
        place
        remove-cell a
        lrp web/2
        place
        cell a zone=z1
        lrp web/3
        place
        usage
        ",
        expect![[r#"
            web/0 -> a
            web/1 -> c
            web/2 -> b
            web/3 -> a
            a: memory 128/1024 disk 0/1024 containers 1/10 starting 1 tasks 0 instances 1
            b: memory 128/1024 disk 0/1024 containers 1/10 starting 1 tasks 0 instances 1
            c: memory 128/1024 disk 0/1024 containers 1/10 starting 1 tasks 0 instances 1
        "#]],
    );
}

#[test]
fn upserted_cell_keeps_its_work() {
    // a shrinks below what it holds: nothing more fits there. Then it moves to zone z2
    // with its instance, grows, and requires the gpu tag.
    check(
        "
        cell a zone=z1 mem=1024
        cell b zone=z1 mem=1024
        add a lrp web/0 mem=512
        cell a zone=z1 mem=256
        usage
        task t1 mem=128
        lrp web/1 mem=64
        place
        cell a zone=z2 mem=4096 tags=gpu
        lrp web/2 mem=64
        lrp web/3 mem=64 tags=gpu
        place
        usage
        ",
        expect![[r#"
            a: memory 512/256 disk 0/1024 containers 1/10 starting 0 tasks 0 instances 1
            b: memory 0/1024 disk 0/1024 containers 0/10 starting 0 tasks 0 instances 0
            t1 -> b
            web/1 -> b
            web/2 -> b
            web/3 -> a
            a: memory 576/4096 disk 0/1024 containers 2/10 starting 1 tasks 0 instances 2
            b: memory 256/1024 disk 0/1024 containers 3/10 starting 3 tasks 1 instances 2
        "#]],
    );
}

#[test]
fn unknown_cells_are_ignored() {
    check(
        "
        cell a
        add ghost lrp web/0
        remove ghost lrp web/0
        started ghost
        remove-cell ghost
        remove a lrp never/0
        usage
        ",
        expect![[r#"
            a: memory 0/1024 disk 0/1024 containers 0/10 starting 0 tasks 0 instances 0
        "#]],
    );
}
