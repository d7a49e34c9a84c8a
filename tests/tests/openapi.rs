//! Issue 16: docs/src/openapi.yaml describes every endpoint, and what a running agent
//! answers conforms to it. A real cluster is driven through every operation (success and
//! the documented errors); each answer is checked by tests/web/openapi_check.py against
//! the spec with closed objects (an undocumented field fails), and every operation of the
//! spec must have been exercised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use baton_tests::skip::skip;
use baton_tests::web::Recorder;
use baton_tests::{serial, Cluster, ClusterSpec, MonitorSpec, GROUP, MONITOR};

const T: Duration = Duration::from_secs(20);

#[test]
fn the_agent_answers_as_the_openapi_file_says() {
    let _serial = serial();
    let Some(python) = baton_tests::moto::python() else {
        skip(
            "the_agent_answers_as_the_openapi_file_says",
            "no Python venv with openapi-schema-validator (bash tests/moto/setup.sh)",
        );
        return;
    };
    let mut spec = ClusterSpec::new("openapi", 213).with_monitor(MonitorSpec::default());
    spec.extra_config = "[metrics.prometheus]\n".into();
    let c = Cluster::start(spec);
    c.wait_owner(Some("node-1"), T);
    let api = c.node("node-1").api;
    let bearer = format!("Bearer {}", c.token());
    let read = c.ctl(&["token", "--role", "read"]).ok("token").stdout;
    let read = format!("Bearer {}", read.trim());
    let auth: &[(&str, &str)] = &[("Authorization", &bearer)];
    let json_auth: &[(&str, &str)] = &[
        ("Authorization", &bearer),
        ("Content-Type", "application/json"),
    ];
    let mut r = Recorder::default();

    // Reading.
    assert_eq!(r.send(api, "GET", "/v1/status", auth, None).status, 200);
    assert_eq!(
        r.send(api, "GET", "/v1/cluster/status", auth, None).status,
        200
    );
    assert_eq!(r.send(api, "GET", "/v1/alerts", auth, None).status, 200);
    assert_eq!(
        r.send(api, "GET", "/v1/alerts?tail=5", auth, None).status,
        200
    );
    assert_eq!(
        r.send(api, "GET", "/v1/alerts?after=2&limit=3", auth, None)
            .status,
        200
    );
    assert_eq!(
        r.send(api, "GET", "/v1/alerts?after=abc", auth, None)
            .status,
        400
    );

    // Commands, each kind.
    let cmd =
        |r: &mut Recorder, body: &str| r.send(api, "POST", "/v1/commands", json_auth, Some(body));
    for body in [
        r#"{"command":"cluster-suspend"}"#.to_string(),
        r#"{"command":"cluster-resume"}"#.to_string(),
        format!(r#"{{"command":"monitor-suspend","monitor":"{MONITOR}"}}"#),
        format!(r#"{{"command":"monitor-resume","monitor":"{MONITOR}"}}"#),
        r#"{"command":"timeout-set","heartbeat_timeout_ms":3000,"monitor_factor_pct":200,"duration_ms":60000}"#.to_string(),
        r#"{"command":"timeout-clear"}"#.to_string(),
        format!(r#"{{"command":"group-move","group":"{GROUP}","to":"node-2"}}"#),
    ] {
        let a = cmd(&mut r, &body);
        assert_eq!(a.status, 200, "{body}: {}", a.body);
    }
    c.wait_owner(Some("node-2"), T);
    // Refused commands: clear errors.
    assert_eq!(cmd(&mut r, r#"{"command":"shutdown"}"#).status, 400);
    assert_eq!(cmd(&mut r, "{not json").status, 400);
    assert_eq!(
        cmd(&mut r, r#"{"command":"group-stop","group":"nope"}"#).status,
        404
    );
    assert_eq!(
        cmd(
            &mut r,
            &format!(r#"{{"command":"group-move","group":"{GROUP}","to":"node-9"}}"#)
        )
        .status,
        404
    );
    assert_eq!(
        cmd(&mut r, r#"{"command":"monitor-suspend","monitor":"nope"}"#).status,
        404
    );

    // An oversized body: a JSON error, nothing done.
    let big = format!(
        r#"{{"command":"cluster-suspend","pad":"{}"}}"#,
        "x".repeat(3 << 20)
    );
    let a = cmd(&mut r, &big);
    assert_eq!(a.status, 413, "{}", &a.body[..a.body.len().min(200)]);
    assert_eq!(a.json()["error"]["code"], "payload-too-large");

    // The group shortcuts.
    let path = format!("/v1/groups/{GROUP}/move");
    let a = r.send(api, "POST", &path, json_auth, Some(r#"{"to":"node-3"}"#));
    assert_eq!(a.status, 200, "{}", a.body);
    c.wait_owner(Some("node-3"), T);
    let a = r.send(api, "POST", &path, json_auth, Some(r#"{"to":"node-9"}"#));
    assert_eq!(a.status, 404, "{}", a.body);
    let a = r.send(api, "POST", &path, json_auth, Some(r#"{"where":"node-1"}"#));
    assert_eq!(a.status, 400, "{}", a.body);
    let a = r.send(api, "POST", &format!("/v1/groups/{GROUP}/jump"), auth, None);
    assert_eq!(a.status, 404, "{}", a.body);
    let a = r.send(api, "POST", &format!("/v1/groups/{GROUP}/stop"), auth, None);
    assert_eq!(a.status, 200, "{}", a.body);
    baton_tests::wait_until("the group stopped everywhere", T, || {
        let st = c.try_status()?;
        if st.online_on(GROUP).is_empty() && st.group(GROUP).state == "offline" {
            Ok(())
        } else {
            Err(st.summary(GROUP))
        }
    });
    let a = r.send(
        api,
        "POST",
        &format!("/v1/groups/{GROUP}/start"),
        json_auth,
        Some(r#"{"on":"node-1"}"#),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    c.wait_owner(Some("node-1"), T);

    // Authentication and routing errors.
    assert_eq!(r.send(api, "GET", "/v1/status", &[], None).status, 401);
    assert_eq!(
        r.send(
            api,
            "GET",
            "/v1/status",
            &[("Authorization", "Bearer 00")],
            None
        )
        .status,
        401
    );
    let read_json: &[(&str, &str)] = &[
        ("Authorization", &read),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(
        r.send(
            api,
            "POST",
            "/v1/commands",
            read_json,
            Some(r#"{"command":"cluster-suspend"}"#)
        )
        .status,
        403
    );
    assert_eq!(
        r.send(api, "GET", "/v1/nothing-here", auth, None).status,
        404
    );
    assert_eq!(r.send(api, "DELETE", "/v1/status", auth, None).status, 405);
    assert_eq!(r.send(api, "GET", "/v1/commands", auth, None).status, 405);

    // The configuration: read (operator role), pushed (checked, dry run, refused).
    assert_eq!(r.send(api, "GET", "/v1/config", auth, None).status, 200);
    let read_only: &[(&str, &str)] = &[("Authorization", &read)];
    // The agent's log lines (operator role too).
    let a = r.send(api, "GET", "/v1/logs?lines=20", auth, None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(r.send(api, "GET", "/v1/logs", read_only, None).status, 403);
    assert_eq!(
        r.send(api, "GET", "/v1/config", read_only, None).status,
        403
    );
    let a = r.send(api, "GET", "/v1/cluster/config", auth, None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        r.send(api, "GET", "/v1/cluster/config", read_only, None)
            .status,
        403
    );
    let text = std::fs::read_to_string(&c.config).unwrap();
    let check = serde_json::json!({"text": text, "mode": "check"}).to_string();
    let a = r.send(api, "POST", "/v1/config", json_auth, Some(&check));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["outcome"], "checked");
    let bad = serde_json::json!({"text": "[cluster]\nname = 1\n", "mode": "check"}).to_string();
    let a = r.send(api, "POST", "/v1/config", json_auth, Some(&bad));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], "config-invalid");
    assert_eq!(
        r.send(api, "POST", "/v1/config", json_auth, Some(r#"{"txt":""}"#))
            .status,
        400
    );
    assert_eq!(
        r.send(api, "POST", "/v1/config", read_json, Some(&check))
            .status,
        403
    );
    let more = format!(
        "{text}\n[[monitor]]\nkind = \"exec\"\nname = \"openapi-extra\"\ncommand = \"true\"\n"
    );
    let dry = serde_json::json!({"text": more, "dry_run": true}).to_string();
    let a = r.send(api, "POST", "/v1/cluster/config", json_auth, Some(&dry));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["outcome"], "dry-run");
    assert_eq!(a.json()["ok"], true);
    let restart = serde_json::json!({"text": text.replacen("interval = \"100ms\"", "interval = \"150ms\"", 1)}).to_string();
    let a = r.send(api, "POST", "/v1/cluster/config", json_auth, Some(&restart));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["outcome"], "refused");
    assert_eq!(
        r.send(api, "POST", "/v1/cluster/config", json_auth, Some("{}"))
            .status,
        400
    );
    assert_eq!(
        r.send(api, "POST", "/v1/cluster/config", read_json, Some(&dry))
            .status,
        403
    );

    // Metrics and health.
    assert_eq!(r.send(api, "GET", "/metrics", auth, None).status, 200);
    assert_eq!(r.send(api, "GET", "/metrics", &[], None).status, 401);
    assert_eq!(r.send(api, "GET", "/healthz", &[], None).status, 200);

    // The Web UI's endpoints.
    assert_eq!(r.send(api, "GET", "/", &[], None).status, 303);
    assert_eq!(r.send(api, "GET", "/ui", &[], None).status, 303);
    assert_eq!(r.send(api, "GET", "/ui/login", &[], None).status, 200);
    assert_eq!(
        r.send(api, "GET", "/ui/login?expired=1", &[], None).status,
        200
    );
    assert_eq!(
        r.send(api, "GET", "/ui/static/app.js", &[], None).status,
        200
    );
    assert_eq!(
        r.send(api, "GET", "/ui/static/app.css", &[], None).status,
        200
    );
    assert_eq!(r.send(api, "GET", "/ui/", &[], None).status, 303);
    assert_eq!(r.send(api, "GET", "/ui/live", &[], None).status, 401);
    let form: &[(&str, &str)] = &[("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(
        r.send(api, "POST", "/ui/login", form, Some("user=eve&token=wrong"))
            .status,
        401
    );
    let op = c.ctl(&["token", "--role", "operator"]).ok("token").stdout;
    let a = r.send(
        api,
        "POST",
        "/ui/login",
        form,
        Some(&format!("user=ops&token={}", op.trim())),
    );
    assert_eq!(a.status, 303);
    let cookie = a
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let with: &[(&str, &str)] = &[("Cookie", &cookie)];
    let dash = r.send(api, "GET", "/ui/", with, None);
    assert_eq!(dash.status, 200);
    let i = dash.body.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = dash.body[i..i + 64].to_string();
    let live = r.send(api, "GET", "/ui/live", with, None);
    assert_eq!(live.status, 200);
    let etag = live.header("etag").unwrap().to_string();
    let cached: &[(&str, &str)] = &[("Cookie", &cookie), ("If-None-Match", &etag)];
    assert_eq!(r.send(api, "GET", "/ui/live", cached, None).status, 304);
    for page in [
        "/ui/alerts",
        "/ui/alerts?severity=warning&group=web&q=group",
        "/ui/failovers",
        "/ui/events",
    ] {
        assert_eq!(r.send(api, "GET", page, with, None).status, 200, "{page}");
    }
    let json_form: &[(&str, &str)] = &[
        ("Cookie", &cookie),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Accept", "application/json"),
    ];
    let a = r.send(
        api,
        "POST",
        "/ui/op",
        json_form,
        Some(&format!("csrf={csrf}&op=cluster-suspend&confirm=yes")),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let a = r.send(
        api,
        "POST",
        "/ui/op",
        json_form,
        Some(&format!("csrf={csrf}&op=cluster-resume&confirm=yes")),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let a = r.send(
        api,
        "POST",
        "/ui/op",
        json_form,
        Some(&format!(
            "csrf={csrf}&op=group-move&group={GROUP}&to=node-9&confirm=yes"
        )),
    );
    assert_eq!(a.status, 404, "{}", a.body);
    let a = r.send(
        api,
        "POST",
        "/ui/op",
        json_form,
        Some(&format!("csrf={csrf}&op=fly&confirm=yes")),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    let a = r.send(
        api,
        "POST",
        "/ui/op",
        json_form,
        Some("csrf=nope&op=cluster-suspend&confirm=yes"),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    let plain_form: &[(&str, &str)] = &[
        ("Cookie", &cookie),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let a = r.send(
        api,
        "POST",
        "/ui/op",
        plain_form,
        Some(&format!("csrf={csrf}&op=cluster-suspend")),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let a = r.send(
        api,
        "POST",
        "/ui/logout",
        plain_form,
        Some(&format!("csrf={csrf}")),
    );
    assert_eq!(a.status, 303);
    let a = r.send(
        api,
        "POST",
        "/ui/op",
        json_form,
        Some(&format!("csrf={csrf}&op=cluster-suspend&confirm=yes")),
    );
    assert_eq!(a.status, 401, "{}", a.body);

    r.check(&python, &c.dir);
}
