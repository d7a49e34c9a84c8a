//! Issue 16: the Web UI over HTTP on a real cluster: login with a role token (wrong
//! token, the cluster key's token refused), security headers, the live part with ETags,
//! an operation through the UI moves the group and is recorded naming who, and bad input
//! (CSRF attempt, a read-only session, a move to an unknown server, an oversized form, a
//! session that is gone, too many failed logins from one address) gets a clear answer
//! and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use baton_tests::web::{exchange, Answer};
use baton_tests::{serial, Cluster, ClusterSpec, MonitorSpec, GROUP};

const T: Duration = Duration::from_secs(20);

fn form(
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Answer {
    let c = cookie.map(|c| format!("baton_session={c}"));
    let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(c) = &c {
        h.push(("Cookie", c));
    }
    h.extend_from_slice(extra);
    exchange(addr, "POST", path, &h, Some(body.as_bytes())).unwrap()
}

fn get(addr: SocketAddr, path: &str, cookie: Option<&str>, extra: &[(&str, &str)]) -> Answer {
    let c = cookie.map(|c| format!("baton_session={c}"));
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(c) = &c {
        h.push(("Cookie", c));
    }
    h.extend_from_slice(extra);
    exchange(addr, "GET", path, &h, None).unwrap()
}

fn login(addr: SocketAddr, user: &str, token: &str) -> Answer {
    let body = format!("user={user}&token={token}");
    form(addr, "/ui/login", None, &[], &body)
}

fn session_of(a: &Answer) -> String {
    let c = a
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no cookie: {a:?}"));
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/ui"),
        "{c}"
    );
    c.split(';')
        .next()
        .unwrap()
        .trim_start_matches("baton_session=")
        .to_string()
}

fn csrf_of(page: &str) -> String {
    let i = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[i..i + 64].to_string()
}

#[test]
fn the_web_ui_logs_in_operates_and_refuses_bad_input() {
    let _serial = serial();
    let c = Cluster::start(ClusterSpec::new("webui", 214).with_monitor(MonitorSpec::default()));
    c.wait_owner(Some("node-1"), T);
    let ui = c.node("node-1").api;
    let op_token = c
        .ctl(&["token", "--role", "operator"])
        .ok("token")
        .stdout
        .trim()
        .to_string();
    let read_token = c
        .ctl(&["token", "--role", "read"])
        .ok("token")
        .stdout
        .trim()
        .to_string();

    // Not logged in: to the login page.
    let a = get(ui, "/ui/", None, &[]);
    assert_eq!((a.status, a.header("location")), (303, Some("/ui/login")));
    let a = get(ui, "/ui/login", None, &[]);
    assert_eq!(a.status, 200);
    let csp = a.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    assert!(
        !a.body.contains("http://") && !a.body.contains("https://"),
        "external resource in {}",
        a.body
    );

    // Wrong token, the cluster key's token, a bad name: refused, no cookie.
    let a = login(ui, "mallory", &"0".repeat(64));
    assert_eq!(a.status, 401);
    assert!(a.body.contains("Wrong token"), "{}", a.body);
    assert!(a.header("set-cookie").is_none());
    let a = login(ui, "root", c.token());
    assert_eq!(a.status, 401);
    assert!(a.body.contains("cluster key"), "{}", a.body);
    let a = login(ui, "%3Cscript%3E", &op_token);
    assert_eq!(a.status, 400);
    // A login posted from another site.
    let a = form(
        ui,
        "/ui/login",
        None,
        &[("Origin", "http://evil.example")],
        &format!("user=x&token={op_token}"),
    );
    assert_eq!(a.status, 403);

    // An operator logs in; the dashboard shows the servers and the group.
    let a = login(ui, "alice", &op_token);
    assert_eq!(a.status, 303, "{}", a.body);
    let sid = session_of(&a);
    let dash = get(ui, "/ui/", Some(&sid), &[]);
    assert_eq!(dash.status, 200);
    for want in [
        "node-1",
        "node-2",
        "node-3",
        "data-group=\"web\"",
        "Move to",
        "app-check",
        // Every server's monitors, not only this one's.
        "<tr data-monitor-server=\"node-2\"><th scope=\"row\">app-check",
        "<tr data-monitor-server=\"node-3\"><th scope=\"row\">app-check",
    ] {
        assert!(dash.body.contains(want), "{want} missing");
    }
    let csrf = csrf_of(&dash.body);
    // The live part: an ETag, 304 when unchanged.
    let live = get(ui, "/ui/live", Some(&sid), &[]);
    assert_eq!(live.status, 200);
    let etag = live.header("etag").unwrap().to_string();
    let again = get(ui, "/ui/live", Some(&sid), &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304, "{}", again.body);

    // CSRF: a move without the form's token, or from another origin: refused.
    let move_body = format!("op=group-move&group={GROUP}&to=node-2&confirm=yes");
    let json = [("Accept", "application/json")];
    let a = form(ui, "/ui/op", Some(&sid), &json, &move_body);
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], "csrf");
    let a = form(
        ui,
        "/ui/op",
        Some(&sid),
        &[
            ("Accept", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        &format!("csrf={csrf}&{move_body}"),
    );
    assert_eq!(a.status, 403);
    // Unknown server: the API's own error, nothing changes.
    let a = form(
        ui,
        "/ui/op",
        Some(&sid),
        &json,
        &format!("csrf={csrf}&op=group-move&group={GROUP}&to=node-9&confirm=yes"),
    );
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(
        a.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown-server"),
        "{}",
        a.body
    );
    // Oversized form: 413, nothing done.
    let big = format!(
        "csrf={csrf}&op=group-move&group={GROUP}&to=node-2&confirm=yes&pad={}",
        "x".repeat(40_000)
    );
    let a = form(ui, "/ui/op", Some(&sid), &json, &big);
    assert_eq!(a.status, 413, "{}", a.body);
    // Without confirmation: a confirmation page, nothing done.
    let a = form(
        ui,
        "/ui/op",
        Some(&sid),
        &[],
        &format!("csrf={csrf}&op=group-move&group={GROUP}&to=node-2"),
    );
    assert_eq!(a.status, 200);
    assert!(a.body.contains("move group web to node-2"), "{}", a.body);
    assert_eq!(c.wait_owner(Some("node-1"), T).0, "node-1");

    // A read-only session may look, not operate.
    let r = session_of(&login(ui, "bob", &read_token));
    let dash = get(ui, "/ui/", Some(&r), &[]);
    assert!(!dash.body.contains("Move to"));
    let rcsrf = csrf_of(&dash.body);
    let a = form(
        ui,
        "/ui/op",
        Some(&r),
        &json,
        &format!("csrf={rcsrf}&{move_body}"),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(c.wait_owner(Some("node-1"), T).0, "node-1");

    // The move, confirmed, as the page's script sends it: done, and recorded naming alice.
    let a = form(
        ui,
        "/ui/op",
        Some(&sid),
        &json,
        &format!("csrf={csrf}&{move_body}"),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["ok"], true);
    c.wait_owner(Some("node-2"), T);
    let evs = c.wait_event("node-1", "BTN-4030", T, |e| e.message.contains("to node-2"));
    let ev = evs
        .iter()
        .find(|e| e.id == "BTN-4030" && e.message.contains("to node-2"))
        .unwrap();
    // The refused move to an unknown server was recorded too.
    assert!(evs
        .iter()
        .any(|e| e.id == "BTN-4030" && e.message.contains("refused (unknown-server)")));
    assert!(
        ev.message.contains("move group web to node-2")
            && ev.message.contains("alice (operator token"),
        "{}",
        ev.message
    );
    assert!(ev.message.contains("accepted"), "{}", ev.message);

    // The move's timeline: request, deactivation on node-1, claim and activation on node-2.
    let a = get(ui, "/ui/failovers", Some(&sid), &[]);
    assert_eq!(a.status, 200);
    let i = a
        .body
        .find("data-kind=\"move\"")
        .unwrap_or_else(|| panic!("no move timeline: {}", a.body));
    let t = &a.body[i..a.body[i..]
        .find("</article>")
        .map_or(a.body.len(), |j| i + j)];
    for want in [
        "node-1 → node-2 (move)",
        "Online again after",
        "Request",
        "Deactivation",
        "Claim",
        "Activation",
    ] {
        assert!(t.contains(want), "{want} missing from {t}");
    }

    // Alert log (every server's), filters, links to the events reference.
    let a = get(ui, "/ui/alerts?severity=info&group=web", Some(&sid), &[]);
    assert_eq!(a.status, 200);
    assert!(
        a.body.contains("href=\"/ui/events#btn-2102\""),
        "no link to BTN-2102"
    );
    let a = get(ui, "/ui/events", Some(&sid), &[]);
    assert!(a.body.contains("id=\"btn-2102\""));

    // Logged out: the old cookie no longer opens anything.
    let a = form(ui, "/ui/logout", Some(&sid), &[], &format!("csrf={csrf}"));
    assert_eq!(a.status, 303);
    let a = get(ui, "/ui/", Some(&sid), &[]);
    assert_eq!((a.status, a.header("location")), (303, Some("/ui/login")));
    let a = get(ui, "/ui/live", Some(&sid), &[]);
    assert_eq!(a.status, 401);
    let a = form(
        ui,
        "/ui/op",
        Some(&sid),
        &json,
        &format!("csrf={csrf}&op=group-move&group={GROUP}&to=node-3&confirm=yes"),
    );
    assert_eq!(a.status, 401);
    assert_eq!(c.wait_owner(Some("node-2"), T).0, "node-2");

    // Five failed logins from one address: every login from it is refused for a while,
    // even with a right token; the block is one more event, the refusals during it none.
    let ui3 = c.node("node-3").api;
    for _ in 0..5 {
        let a = login(ui3, "mallory", &"1".repeat(64));
        assert_eq!(a.status, 401, "{}", a.body);
    }
    for _ in 0..2 {
        let a = login(ui3, "alice", &op_token);
        assert_eq!(a.status, 429, "{}", a.body);
        assert!(a.body.contains("Too many failed logins"), "{}", a.body);
        let secs: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "{secs}");
        assert!(a.header("set-cookie").is_none());
    }
    let evs = c.wait_event("node-3", "BTN-4032", T, |e| {
        e.fields.contains_key("blocked_s")
    });
    let refused: Vec<_> = evs.iter().filter(|e| e.id == "BTN-4032").collect();
    assert_eq!(refused.len(), 6, "{refused:?}");
    // Another agent still lets the same address in (the limit is per agent).
    let a = login(ui, "alice", &op_token);
    assert_eq!(a.status, 303, "{}", a.body);
}
