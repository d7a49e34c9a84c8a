use std::time::Duration;

use baton_providers::local::claim::{Claim, LocalClaimDriver};
use baton_providers::local::LocalRegistry;
use baton_providers::{CheckOutcome, Registry, ResourceDriver};

use crate::{ctx, qp, table};

fn driver(path: &std::path::Path) -> Box<dyn ResourceDriver> {
    LocalRegistry
        .build_resource("local-claim", &table(&format!("path = {}", qp(path))))
        .unwrap()
}

fn history(path: &std::path::Path) -> Vec<Claim> {
    let mut h = path.as_os_str().to_owned();
    h.push(".history");
    std::fs::read_to_string(h)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn epoch_fencing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claim.json");
    let d = driver(&path);
    let t = Duration::from_secs(2);

    assert_eq!(
        d.check(&ctx("a", 1, t)).await.unwrap(),
        CheckOutcome::Inactive
    );
    d.activate(&ctx("a", 1, t)).await.unwrap();
    d.activate(&ctx("a", 1, t)).await.unwrap(); // idempotent
    assert_eq!(
        d.check(&ctx("a", 1, t)).await.unwrap(),
        CheckOutcome::Active
    );
    assert_eq!(
        d.check(&ctx("b", 1, t)).await.unwrap(),
        CheckOutcome::Inactive
    );

    // Same epoch, other owner: refused.
    let e = d.activate(&ctx("b", 1, t)).await.unwrap_err();
    assert_eq!(e.to_string(), "the claim is already held at epoch 1 by a");

    // Higher epoch takes over.
    d.activate(&ctx("b", 2, t)).await.unwrap();
    assert_eq!(
        d.check(&ctx("b", 2, t)).await.unwrap(),
        CheckOutcome::Active
    );
    assert_eq!(
        d.check(&ctx("a", 1, t)).await.unwrap(),
        CheckOutcome::Inactive
    );

    // The old owner, at its old epoch, cannot take it back.
    let e = d.activate(&ctx("a", 1, t)).await.unwrap_err();
    assert_eq!(e.code(), "other");
    assert_eq!(
        e.to_string(),
        "stale epoch: the claim is held at epoch 2 by b (ours is 1)"
    );

    // Deactivation by a server that does not hold it leaves the claim.
    d.deactivate(&ctx("a", 1, t)).await.unwrap();
    d.deactivate(&ctx("a", 3, t)).await.unwrap();
    assert_eq!(
        LocalClaimDriver::read_claim(&path).unwrap(),
        Some(Claim {
            owner: "b".into(),
            group: "web".into(),
            epoch: 2
        })
    );
    // The holder releases it.
    d.deactivate(&ctx("b", 2, t)).await.unwrap();
    assert_eq!(LocalClaimDriver::read_claim(&path).unwrap(), None);
    d.deactivate(&ctx("b", 2, t)).await.unwrap(); // idempotent

    // Even with the claim released, history shows a strictly increasing epoch.
    let h = history(&path);
    assert_eq!(
        h.iter()
            .map(|c| (c.owner.as_str(), c.epoch))
            .collect::<Vec<_>>(),
        vec![("a", 1), ("b", 2)]
    );
}

#[tokio::test]
async fn concurrent_activations_never_share_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claim.json");
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let p = path.clone();
        tasks.push(tokio::spawn(async move {
            let d = driver(&p);
            let server = format!("s{}", i % 4);
            let r = d
                .activate(&ctx(&server, 1 + i / 2, Duration::from_secs(5)))
                .await;
            r.is_ok()
        }));
    }
    let mut oks = 0;
    for t in tasks {
        if t.await.unwrap() {
            oks += 1;
        }
    }
    assert!(oks >= 1);
    let h = history(&path);
    assert_eq!(h.len(), oks);
    for w in h.windows(2) {
        assert!(
            w[1].epoch > w[0].epoch,
            "history went backwards or repeated: {h:?}"
        );
    }
}

#[test]
fn params() {
    let e = LocalRegistry
        .build_resource("local-claim", &table(""))
        .unwrap_err();
    assert_eq!(e.message, "missing required key `path`");
    let e = LocalRegistry
        .build_resource("local-claim", &table("path = '/tmp/x'\nowner = 'me'"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("owner"));
}
