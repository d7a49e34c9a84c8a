//! Data marks ([`crate::marks`]): raised by the agent of a mirror's primary, kept as a
//! maximum by every server and the witness, persisted with the epochs, and reported
//! with whether a quorum of votes holds them (the agent lets sync writes go on alone
//! only then, and refuses to promote a copy a held mark excludes).

use super::*;
use crate::marks::{self, Mark};

const KEY: &str = "db/data";

/// `n` servers; group `db` with a `mirror-disk` on node-1 and node-2.
fn mirrored(n: usize, witness: bool) -> String {
    let q = if witness {
        "[quorum]\nwitness = { kind = \"http\", url = \"http://127.0.0.1:7430\" }\n\n"
    } else {
        ""
    };
    cluster(
        n,
        &format!(
            "{q}[[group]]\nname = \"db\"\nservers = [\"node-1\", \"node-2\"]\n\n[[group.resource]]\nkind = \"mirror-disk\"\nname = \"data\"\n"
        ),
    )
}

fn mark_of(sim: &Sim, s: &str) -> Option<MarkStatus> {
    sim.eng(s).status().marks.get(KEY).cloned()
}

/// node-1 alone holds the newest data, one step above `v`.
fn alone(v: u64) -> u64 {
    Mark::decode(v)
        .raised(marks::bit("node-1", "node-2"))
        .unwrap()
}

#[test]
fn a_mark_spreads_to_every_server_is_persisted_and_held_by_a_quorum() {
    let mut sim = Sim::new(&mirrored(3, false));
    sim.run(STARTUP + 1_000);
    let v = alone(0);
    let i = sim.idx("node-1");
    sim.feed(
        i,
        Input::Mark {
            key: KEY.into(),
            value: v,
        },
    );
    // Not a mirror of this configuration, or not higher: ignored.
    sim.feed(
        i,
        Input::Mark {
            key: "db/other".into(),
            value: 99,
        },
    );
    sim.feed(
        i,
        Input::Mark {
            key: KEY.into(),
            value: 1,
        },
    );
    sim.run(3 * INTERVAL);
    for s in ["node-1", "node-2", "node-3"] {
        let m = mark_of(&sim, s).unwrap_or_else(|| panic!("{s} does not know the mark"));
        assert_eq!(m.value, v, "{s}");
        assert!(m.quorum, "{s}: {m:?}");
        assert_eq!(
            sim.nodes[sim.idx(s)].disk.epochs.get(KEY),
            Some(&v),
            "{s} persisted it"
        );
    }
    assert_eq!(
        mark_of(&sim, "node-1").unwrap().held_by,
        vec!["node-1", "node-2", "node-3"]
    );
    assert!(!sim.eng("node-1").status().marks.contains_key("db/other"));
    // A server restarted from its state directory still knows it.
    sim.kill("node-3");
    let boot = sim.boot_state("node-3");
    sim.restart("node-3", boot);
    assert_eq!(mark_of(&sim, "node-3").map(|m| m.value), Some(v));
}

#[test]
fn a_mark_only_the_raiser_holds_is_not_held_by_a_quorum() {
    let mut sim = Sim::new(&mirrored(3, false));
    sim.run(STARTUP + 1_000);
    sim.isolate("node-1");
    sim.run(TIMEOUT + 2 * INTERVAL);
    let v = alone(0);
    let i = sim.idx("node-1");
    sim.feed(
        i,
        Input::Mark {
            key: KEY.into(),
            value: v,
        },
    );
    sim.run(3 * INTERVAL);
    let m = mark_of(&sim, "node-1").unwrap();
    assert_eq!(m.held_by, vec!["node-1"]);
    assert!(!m.quorum);
    assert!(mark_of(&sim, "node-2").is_none());
    sim.heal();
    sim.run(TIMEOUT + 3 * INTERVAL);
    assert!(mark_of(&sim, "node-1").unwrap().quorum);
}

/// Two servers and a witness: the witness's stored copy makes the quorum, and a server
/// that never heard the mark learns it from the witness (the stale side of a double
/// failure).
#[test]
fn the_witness_keeps_a_mark_and_hands_it_to_a_server_that_missed_it() {
    let mut sim = Sim::new(&mirrored(2, true));
    sim.witness_grants = Some(true);
    sim.run(STARTUP + 1_000);
    sim.kill("node-2");
    sim.run(TIMEOUT + 2 * INTERVAL);
    let v = alone(0);
    let i = sim.idx("node-1");
    sim.feed(
        i,
        Input::Mark {
            key: KEY.into(),
            value: v,
        },
    );
    sim.run(3 * INTERVAL);
    let m = mark_of(&sim, "node-1").unwrap();
    assert_eq!(m.held_by, vec!["node-1", "witness"]);
    assert!(m.quorum);
    assert_eq!(sim.witness_epochs.get(KEY), Some(&v));
    // node-1 dies; node-2 returns with a state directory that never saw the mark.
    sim.kill("node-1");
    let boot = sim.boot_state("node-2");
    assert!(!boot.epochs.contains_key(KEY));
    sim.restart("node-2", boot);
    sim.run(3 * INTERVAL);
    let m = mark_of(&sim, "node-2").expect("node-2 learned the mark from the witness");
    assert_eq!(m.value, v);
    assert!(!Mark::decode(m.value).includes(marks::bit("node-2", "node-1")));
}

#[test]
fn a_mark_above_the_bound_is_refused_with_the_whole_heartbeat() {
    let mut sim = Sim::new(&mirrored(3, false));
    sim.run(STARTUP + 1_000);
    let mut msg = sim.eng("node-2").peer_message();
    msg.marks.insert(KEY.into(), crate::bounds::MAX_EPOCH + 1);
    let i = sim.idx("node-1");
    sim.feed(
        i,
        Input::Heartbeat {
            from: "node-2".into(),
            path: 0,
            msg: Box::new(msg),
            newest: true,
        },
    );
    assert!(mark_of(&sim, "node-1").is_none());
    assert!(sim.has("node-1", &events::EPOCH_REFUSED));
}
