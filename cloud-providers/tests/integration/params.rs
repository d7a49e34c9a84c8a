use baton_providers::local::LocalRegistry;
use baton_providers::params::parse_params;
use baton_providers::{describe_kinds, Registry};

use crate::table;

#[test]
fn unknown_resource_kind() {
    let e = LocalRegistry
        .build_resource("aws-eip", &table(""))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("kind"));
    assert_eq!(
        e.message,
        "unknown resource kind `aws-eip`; known kinds: exec, floating-ip, systemd, local-claim"
    );
}

#[test]
fn kinds_are_listed() {
    let k = describe_kinds(&LocalRegistry);
    assert_eq!(
        k["resource"],
        vec!["exec", "floating-ip", "systemd", "local-claim"]
    );
    assert_eq!(k["monitor"], vec!["process", "tcp", "http", "exec", "ping"]);
}

#[test]
fn every_kind_rejects_unknown_keys() {
    for kind in LocalRegistry.resource_kinds() {
        let e = LocalRegistry
            .build_resource(kind, &table("zzz_unknown = 1"))
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("zzz_unknown"), "{kind}: {e:?}");
        assert!(
            e.message
                .starts_with("unknown key `zzz_unknown`; expected one of "),
            "{kind}: {}",
            e.message
        );
    }
    for kind in LocalRegistry.monitor_kinds() {
        let e = LocalRegistry
            .build_probe(kind, &table("zzz_unknown = 1"))
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("zzz_unknown"), "{kind}: {e:?}");
    }
}

#[test]
fn wrong_types() {
    let e = LocalRegistry
        .build_resource("exec", &table("start = 5\nstop = 'x'"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("start"));
    assert_eq!(e.message, "wrong type: got integer `5`, expected a string");
}

#[test]
fn durations_in_any_struct() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(deserialize_with = "baton_providers::params::duration")]
        interval: std::time::Duration,
    }
    let p: P = parse_params(&table("interval = '2m'")).unwrap();
    assert_eq!(p.interval, std::time::Duration::from_secs(120));
    let e = parse_params::<P>(&table("interval = '5 sec'")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("interval"));
    assert_eq!(
        e.message,
        "invalid duration '5 sec': use a number and a unit, like 200ms, 5s, 2m or 1h"
    );
}

#[test]
fn plain_type_names() {
    let e = LocalRegistry
        .build_resource("floating-ip", &table("ip = '10.0.0.1'\narp_count = -1"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("arp_count"));
    assert_eq!(
        e.message,
        "invalid value: integer `-1`, expected a whole number from 0 to 4294967295"
    );
    let e = LocalRegistry
        .build_resource("exec", &table("start = 'x'\nstop = 'y'\nenv = 'A=1'"))
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("env"));
    assert_eq!(
        e.message,
        "wrong type: got string \"A=1\", expected a table"
    );
}
