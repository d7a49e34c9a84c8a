//! Docs that cannot drift: every TOML example and every `baton …` command line in
//! `docs/src/*.md` and `README.md` goes through the code it describes.
//!
//! * A ```toml block that is a complete configuration (it has `[cluster]` and
//!   `[[server]]`) must load with the loader `baton config check` uses
//!   (`catalog::load`, every kind of this build). A block that is not complete must be
//!   marked ```toml fragment: it is spliced into a small three-server configuration (a
//!   group without a name becomes the resources of a stub group, names it refers to and
//!   that it does not define become stubs) and must then load the same way, so every key
//!   in it is one the schema knows. ```toml witness-key-file is loaded by the witness.
//!   A `<placeholder>` inside a block must be declared by an HTML comment right before
//!   the block: `<!-- docs-drift: placeholder "<64 hex digits>" = "…" -->`; the value
//!   replaces it before the check.
//! * A command line of a code block (` ```sh `, `console`, `bash`, `text`, unlabelled)
//!   that runs `baton` (after a `$ ` or `# ` prompt, `sudo`, `VAR=value`,
//!   `ExecStart=/path/to/baton` or `cargo run --bin baton --`) must parse with the real
//!   CLI definition (`Cli::try_parse_from`). Synopsis notation is read as such: `[ ]` are
//!   dropped, `a|b` is expanded to each alternative, `…` is dropped. Inline code that
//!   starts with `baton ` names a command: it must parse too, except that a required
//!   argument or a flag's value may be left out. `Usage: baton …` lines are read the same
//!   way. A line meant to show a wrong usage is marked with `docs-drift: wrong` in a
//!   comment on it (none is today).
//! * The demo transcript of docs/src/getting-started.md: its shape follows the demo's
//!   and the status's output, its event ids and their order are those the demo prints,
//!   the timeline's numbers agree with each other and with the takeover wait the demo's
//!   own configuration derives, and the options table lists the demo's options and
//!   defaults.
//!
//! Every check fails loudly when it finds fewer examples than the docs hold today: the
//! test cannot pass by extracting nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use baton_agent::catalog;
use baton_agent::cli::Cli;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::CommandFactory;

// ---------------------------------------------------------------------------------
// Markdown extraction
// ---------------------------------------------------------------------------------

/// A fenced code block.
#[derive(Debug, Clone)]
struct Block {
    file: String,
    /// Line of the opening fence (1-based).
    line: usize,
    /// The info string's words (`toml`, `fragment`, …).
    info: Vec<String>,
    /// The HTML comment lines right before the fence (`docs-drift:` directives).
    directives: Vec<String>,
    /// The block's lines, the fence's indentation removed.
    text: String,
}

/// A span of inline code.
#[derive(Debug, Clone)]
struct Inline {
    file: String,
    line: usize,
    text: String,
}

struct Doc {
    file: String,
    blocks: Vec<Block>,
    inline: Vec<Inline>,
    /// Lines outside code blocks (for `Usage:` lines and prose checks).
    text: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// docs/src/*.md and README.md, relative to the repository.
fn doc_files() -> Vec<String> {
    let root = repo();
    let mut files: Vec<String> = std::fs::read_dir(root.join("docs/src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    files.push("README.md".into());
    assert!(files.len() > 20, "found only {files:?}");
    files
}

fn parse_doc(file: &str) -> Doc {
    let src = std::fs::read_to_string(repo().join(file)).unwrap();
    let lines: Vec<&str> = src.lines().collect();
    let mut blocks = Vec::new();
    // Outside code blocks, with code blocks' lines blanked (line numbers kept).
    let mut prose = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        let fence = if t.starts_with("```") {
            Some('`')
        } else if t.starts_with("~~~") {
            Some('~')
        } else {
            None
        };
        let Some(fc) = fence else {
            prose.push_str(l);
            prose.push('\n');
            i += 1;
            continue;
        };
        let indent = l.len() - t.len();
        let n = t.chars().take_while(|c| *c == fc).count();
        let info: Vec<String> = t[n..]
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let mut directives = Vec::new();
        let mut k = i;
        while k > 0 {
            let p = lines[k - 1].trim();
            if p.starts_with("<!--") && p.ends_with("-->") {
                directives.push(p.to_string());
                k -= 1;
            } else {
                break;
            }
        }
        let start = i;
        let mut body = Vec::new();
        prose.push('\n');
        i += 1;
        while i < lines.len() {
            let c = lines[i];
            let ct = c.trim_start();
            prose.push('\n');
            if ct.starts_with(&fc.to_string().repeat(n)) && ct.trim_end().chars().all(|x| x == fc) {
                break;
            }
            let strip = c.len() - ct.len();
            body.push(if strip >= indent { &c[indent..] } else { ct });
            i += 1;
        }
        i += 1;
        blocks.push(Block {
            file: file.into(),
            line: start + 1,
            info,
            directives,
            text: body.join("\n") + "\n",
        });
    }
    // Inline code spans of the prose, which may wrap over lines.
    let mut inline = Vec::new();
    let b = prose.as_bytes();
    let mut p = 0;
    while p < b.len() {
        if b[p] != b'`' {
            p += 1;
            continue;
        }
        let ticks = b[p..].iter().take_while(|c| **c == b'`').count();
        let open = p + ticks;
        let close_pat = "`".repeat(ticks);
        let mut q = open;
        let mut found = None;
        while let Some(off) = prose[q..].find(&close_pat) {
            let at = q + off;
            let run = b[at..].iter().take_while(|c| **c == b'`').count();
            if run == ticks {
                found = Some(at);
                break;
            }
            q = at + run;
        }
        let Some(end) = found else {
            p = open;
            continue;
        };
        let text = prose[open..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let line = prose[..p].matches('\n').count() + 1;
        // A span may not cross a blank line (a paragraph's end).
        if !prose[open..end].contains("\n\n") {
            inline.push(Inline {
                file: file.into(),
                line,
                text,
            });
        }
        p = end + ticks;
    }
    Doc {
        file: file.into(),
        blocks,
        inline,
        text: prose,
    }
}

fn docs() -> Vec<Doc> {
    doc_files().iter().map(|f| parse_doc(f)).collect()
}

// ---------------------------------------------------------------------------------
// TOML examples
// ---------------------------------------------------------------------------------

/// `<!-- docs-drift: placeholder "<x>" = "value" -->` directives of a block.
fn placeholders(b: &Block) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in &b.directives {
        let Some(rest) = d
            .trim_start_matches("<!--")
            .trim_end_matches("-->")
            .trim()
            .strip_prefix("docs-drift:")
        else {
            continue;
        };
        let rest = rest.trim();
        let Some(rest) = rest.strip_prefix("placeholder") else {
            panic!("{}:{}: unknown docs-drift directive `{d}`", b.file, b.line);
        };
        let parts: Vec<&str> = rest.split('"').collect();
        // ` "<x>" = "value" ` splits into ["", "<x>", " = ", "value", ""].
        assert!(
            parts.len() == 5 && parts[2].trim() == "=",
            "{}:{}: a placeholder directive reads `placeholder \"<x>\" = \"value\"`, not `{d}`",
            b.file,
            b.line
        );
        out.push((parts[1].to_string(), parts[3].to_string()));
    }
    out
}

/// The block's text with its declared placeholders replaced; an undeclared `<…>` in a
/// string is an error.
fn substituted(b: &Block) -> Result<String, String> {
    let mut text = b.text.clone();
    for (from, to) in placeholders(b) {
        if !text.contains(&from) {
            return Err(format!("declared placeholder `{from}` does not occur"));
        }
        text = text.replace(&from, &to);
    }
    for l in text.lines() {
        let code = l.split('#').next().unwrap_or("");
        if let Some(s) = code.find("\"<") {
            if code[s..].contains(">\"") {
                return Err(format!(
                    "undeclared placeholder in `{}`: declare it with <!-- docs-drift: placeholder \"<…>\" = \"value\" -->",
                    l.trim()
                ));
            }
        }
    }
    Ok(text)
}

const BASE: &str = r#"
[cluster]
name = "docs"
key_file = "/etc/baton/cluster.key"

[[server]]
name = "node-1"
interconnects = ["10.0.0.11", "10.1.0.11"]
api = "10.0.0.11:7420"

[[server]]
name = "node-2"
interconnects = ["10.0.0.12", "10.1.0.12"]
api = "10.0.0.12:7420"

[[server]]
name = "node-3"
interconnects = ["10.0.0.13", "10.1.0.13"]
api = "10.0.0.13:7420"
"#;

const STUB_GROUP: &str = "docs-stub-group";

fn stub_resource(name: &str) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("kind".into(), "exec".into());
    t.insert("name".into(), name.into());
    for k in ["start", "stop", "check"] {
        t.insert(k.into(), "true".into());
    }
    toml::Value::Table(t)
}

/// Table-wise merge: tables are merged key by key, anything else is replaced.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn names(arr: Option<&toml::Value>) -> Vec<String> {
    arr.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The servers a fragment's per-server tables name (`[group.resource.server.X]`,
/// `[monitor.server.X]`).
fn per_server_names(v: &toml::Value, out: &mut BTreeSet<String>) {
    if let Some(t) = v.as_table() {
        for (k, v) in t {
            if k == "server" {
                if let Some(s) = v.as_table() {
                    out.extend(s.keys().cloned());
                }
            } else {
                per_server_names(v, out);
            }
        }
    } else if let Some(a) = v.as_array() {
        for e in a {
            per_server_names(e, out);
        }
    }
}

/// A fragment spliced into [`BASE`]; see the module comment.
fn splice(fragment: &str) -> Result<String, String> {
    let frag: toml::Table = fragment.parse().map_err(|e| format!("not TOML: {e}"))?;
    let mut cfg: toml::Table = BASE.parse().unwrap();
    let mut named_servers = BTreeSet::new();
    per_server_names(&toml::Value::Table(frag.clone()), &mut named_servers);
    let mut frag = frag;
    // Servers: one of the base's, changed, or a new one.
    if let Some(toml::Value::Array(servers)) = frag.remove("server") {
        let base = cfg.get_mut("server").unwrap().as_array_mut().unwrap();
        for s in servers {
            let name = s.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            match base
                .iter_mut()
                .find(|b| b.get("name").and_then(|n| n.as_str()) == Some(name))
            {
                Some(b) => merge(b.as_table_mut().unwrap(), s.as_table().unwrap().clone()),
                None => base.push(s),
            }
        }
    }
    // Groups: a named one as it is; the resources of an unnamed one go to the stub group.
    let mut groups: Vec<toml::Value> = Vec::new();
    let mut stub_resources: Vec<toml::Value> = Vec::new();
    // `[[group.resource]]` without a `[[group]]` makes `group` a table, not an array.
    let gs = match frag.remove("group") {
        Some(toml::Value::Array(gs)) => gs,
        Some(t @ toml::Value::Table(_)) => vec![t],
        Some(other) => return Err(format!("`group` is {other}")),
        None => Vec::new(),
    };
    {
        for g in gs {
            if g.get("name").is_some() {
                groups.push(g);
            } else if let Some(toml::Value::Array(rs)) = g.get("resource") {
                stub_resources.extend(rs.iter().cloned());
            }
        }
    }
    let monitors: Vec<toml::Value> = match frag.remove("monitor") {
        Some(toml::Value::Array(m)) => m,
        _ => Vec::new(),
    };
    merge(&mut cfg, frag);

    // References the fragment makes and does not define become stubs.
    let mut stub_name: Option<String> = None; // the stub group's name, once decided
    let mut stub_needed = !stub_resources.is_empty();
    let has_group = |gs: &[toml::Value], n: &str| {
        names(Some(&toml::Value::Array(gs.to_vec())))
            .iter()
            .any(|g| g == n)
    };
    let has_resource = |gs: &[toml::Value], stub: &[toml::Value], n: &str| {
        stub.iter()
            .any(|r| r.get("name").and_then(|x| x.as_str()) == Some(n))
            || gs
                .iter()
                .any(|g| names(g.get("resource")).iter().any(|r| r == n))
    };
    // Resources' dependencies.
    let deps: Vec<String> = stub_resources
        .iter()
        .filter_map(|r| r.get("depends_on").and_then(|d| d.as_array()))
        .flatten()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect();
    for d in deps {
        if !has_resource(&groups, &stub_resources, &d) {
            stub_resources.push(stub_resource(&d));
        }
    }
    for m in &monitors {
        if let Some(g) = m.get("group").and_then(|g| g.as_str()) {
            if !has_group(&groups, g) && stub_name.as_deref() != Some(g) {
                assert!(stub_name.is_none(), "a fragment names two undefined groups");
                stub_name = Some(g.to_string());
                stub_needed = true;
            }
        }
        if let Some(r) = m.get("resource").and_then(|r| r.as_str()) {
            if !has_resource(&groups, &stub_resources, r) {
                stub_resources.push(stub_resource(r));
                stub_needed = true;
            }
        }
    }
    for m in &monitors {
        let Some(t) = m
            .get("recovery")
            .and_then(|r| r.get("target"))
            .and_then(|t| t.as_str())
        else {
            continue;
        };
        if t == "local-server"
            || has_group(&groups, t)
            || stub_name.as_deref() == Some(t)
            || has_resource(&groups, &stub_resources, t)
        {
            continue;
        }
        if stub_name.is_none() {
            stub_name = Some(t.to_string());
        } else {
            stub_resources.push(stub_resource(t));
        }
        stub_needed = true;
    }
    if stub_needed {
        if stub_resources.is_empty() {
            stub_resources.push(stub_resource("docs-stub-resource"));
        }
        let all = names(cfg.get("server"));
        let servers: Vec<String> = if named_servers.len() >= 2 {
            named_servers.iter().cloned().collect()
        } else {
            all
        };
        let mut g = toml::Table::new();
        g.insert(
            "name".into(),
            stub_name.unwrap_or_else(|| STUB_GROUP.into()).into(),
        );
        g.insert(
            "servers".into(),
            toml::Value::Array(servers.into_iter().map(toml::Value::String).collect()),
        );
        g.insert("resource".into(), toml::Value::Array(stub_resources));
        groups.push(toml::Value::Table(g));
    }
    if !groups.is_empty() {
        cfg.insert("group".into(), toml::Value::Array(groups));
    }
    // Monitors named by `[metrics.cloudwatch] monitors` and not defined.
    let mut monitors = monitors;
    let wanted: Vec<String> = cfg
        .get("metrics")
        .and_then(|m| m.get("cloudwatch"))
        .and_then(|c| c.get("monitors"))
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for w in wanted {
        if !names(Some(&toml::Value::Array(monitors.clone()))).contains(&w) {
            let mut t = toml::Table::new();
            t.insert("kind".into(), "exec".into());
            t.insert("name".into(), w.into());
            t.insert("command".into(), "true".into());
            monitors.push(toml::Value::Table(t));
        }
    }
    if !monitors.is_empty() {
        cfg.insert("monitor".into(), toml::Value::Array(monitors));
    }
    Ok(toml::to_string(&cfg).unwrap())
}

/// What `baton config check FILE` does with the text (written to a file, loaded by the
/// same function).
fn config_check(text: &str) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.toml");
    std::fs::write(&path, text).unwrap();
    match catalog::load(&path) {
        Ok(l) => Ok(l.warnings.iter().map(|w| w.to_string()).collect()),
        Err(e) => Err(e
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

fn is_complete(text: &str) -> bool {
    text.parse::<toml::Table>()
        .map(|t| t.contains_key("cluster") && t.contains_key("server"))
        .unwrap_or(true)
}

fn check_toml_block(b: &Block) -> Result<&'static str, String> {
    let text = substituted(b)?;
    let marks: Vec<&str> = b.info[1..].iter().map(String::as_str).collect();
    match marks.as_slice() {
        [] => {
            if !is_complete(&text) {
                return Err(
                    "not a complete configuration (no [cluster] or no [[server]]): \
                     complete it, or mark it ```toml fragment"
                        .into(),
                );
            }
            config_check(&text).map(|w| {
                for w in w {
                    eprintln!("{}:{}: note: config check warns: {w}", b.file, b.line);
                }
                "complete"
            })
        }
        ["fragment"] => {
            if is_complete(&text) {
                return Err("a complete configuration is marked `fragment`: drop the mark".into());
            }
            let cfg = splice(&text)?;
            config_check(&cfg)
                .map(|_| "fragment")
                .map_err(|e| format!("{e}\n-- spliced into:\n{cfg}"))
        }
        ["witness-key-file"] => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("orders.witness");
            std::fs::write(&path, &text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            baton_agent::witness::WitnessKeys::load(&[path])
                .map(|_| "witness key file")
                .map_err(|e| e.to_string())
        }
        other => Err(format!("unknown marks {other:?} after ```toml")),
    }
}

#[test]
fn every_toml_example_passes_config_check() {
    let mut failures = Vec::new();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for d in docs() {
        for b in d
            .blocks
            .iter()
            .filter(|b| b.info.first().map(String::as_str) == Some("toml"))
        {
            match check_toml_block(b) {
                Ok(kind) => *counts.entry(kind).or_default() += 1,
                Err(e) => failures.push(format!("{}:{}: {e}", b.file, b.line)),
            }
        }
    }
    eprintln!("toml blocks checked: {counts:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Today: 2 complete configurations, 26 fragments, one witness key file. Fewer means
    // the extraction broke.
    assert!(
        counts.get("complete").copied().unwrap_or(0) >= 2,
        "{counts:?}"
    );
    assert!(
        counts.get("fragment").copied().unwrap_or(0) >= 20,
        "{counts:?}"
    );
    assert!(
        counts.get("witness key file").copied().unwrap_or(0) >= 1,
        "{counts:?}"
    );
}

#[test]
fn the_splice_of_a_fragment_is_checked() {
    // The splicing must not hide a mistake: an unknown key in a fragment still fails.
    let bad = "[[group.resource]]\nkind = \"floating-ip\"\nname = \"vip\"\nipp = \"10.0.0.1\"\n";
    let cfg = splice(bad).unwrap();
    let e = config_check(&cfg).expect_err(&cfg);
    assert!(e.contains("ipp"), "{e}");
    let bad = "[notify.log]\nmin_severty = \"info\"\n";
    assert!(config_check(&splice(bad).unwrap()).is_err());
    let ok = "[[monitor]]\nkind = \"resource\"\nname = \"m\"\nresource = \"web-vip\"\nrecovery = { target = \"web-vip\" }\n";
    config_check(&splice(ok).unwrap()).unwrap();
    // An undeclared placeholder is refused.
    let b = Block {
        file: "x.md".into(),
        line: 1,
        info: vec!["toml".into()],
        directives: vec![],
        text: "witness_key = \"<64 hex digits>\"\n".into(),
    };
    assert!(substituted(&b).is_err());
}

// ---------------------------------------------------------------------------------
// Command lines
// ---------------------------------------------------------------------------------

/// Shell-like words: quotes group, a backslash escapes; `|`, `>`, `<`, `&&`, `;` and a
/// `#` that starts a word end the command (they are returned as `None`).
fn words(line: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                in_word = true;
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(Some(std::mem::take(&mut cur)));
                    in_word = false;
                }
            }
            '#' if !in_word => {
                out.push(None);
                return out;
            }
            '|' | '>' | ';' | '&' => {
                if in_word {
                    out.push(Some(std::mem::take(&mut cur)));
                }
                out.push(None);
                return out;
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(Some(cur));
    }
    out
}

/// The `baton` arguments of a code block's line, or None when the line runs no `baton`.
fn baton_args(line: &str) -> Option<Vec<String>> {
    let mut l = line.trim();
    for p in ["$ ", "# "] {
        if let Some(r) = l.strip_prefix(p) {
            l = r.trim_start();
        }
    }
    if let Some(r) = l.strip_prefix("ExecStart=") {
        l = r;
    }
    let w: Vec<String> = words(l).into_iter().map_while(|w| w).collect();
    let mut i = 0;
    while i < w.len() && (w[i] == "sudo" || (w[i].contains('=') && !w[i].starts_with('-'))) {
        i += 1;
    }
    let first = w.get(i)?;
    if first == "cargo" && w.get(i + 1).map(String::as_str) == Some("run") {
        let bin = w.iter().position(|x| x == "--bin")?;
        if w.get(bin + 1).map(String::as_str) != Some("baton") {
            return None;
        }
        let dd = w.iter().position(|x| x == "--")?;
        return Some(w[dd + 1..].to_vec());
    }
    if first == "baton" || (first.ends_with("/baton") && first.starts_with('/')) {
        return Some(w[i + 1..].to_vec());
    }
    None
}

/// Synopsis notation to plain arguments: `[x]` → `x`, `…` and `...` dropped, and
/// `a|b` alternatives expanded to one argument list each.
fn expand(args: &[String]) -> Vec<Vec<String>> {
    let mut toks: Vec<String> = Vec::new();
    for a in args {
        let a = a.trim_matches(|c| c == '[' || c == ']');
        if a.is_empty() || a == "…" || a == "..." || a.ends_with("...") {
            continue;
        }
        toks.push(a.to_string());
    }
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    for t in toks {
        let alts: Vec<&str> = if t.contains('|') && !t.starts_with('-') {
            t.split('|').filter(|a| !a.is_empty()).collect()
        } else {
            vec![t.as_str()]
        };
        out = out
            .into_iter()
            .flat_map(|prefix| {
                alts.iter().map(move |a| {
                    let mut p = prefix.clone();
                    p.push((*a).to_string());
                    p
                })
            })
            .collect();
    }
    out
}

/// Parse `baton ARGS` with the real CLI. `reference`: a required argument or a flag's
/// value may be missing (a command named in prose or a usage line).
fn parse(args: &[String], reference: bool) -> Result<(), String> {
    let argv = std::iter::once("baton".to_string()).chain(args.iter().cloned());
    match Cli::parse_args(argv) {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Ok(()),
            ErrorKind::MissingRequiredArgument
            | ErrorKind::MissingSubcommand
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                if reference =>
            {
                Ok(())
            }
            // `--to` named without its value (clap: an empty invalid value), or with a
            // placeholder for it (`--listen <LISTEN>`, `SHELL`).
            ErrorKind::InvalidValue | ErrorKind::ValueValidation
                if reference
                    && match e.get(ContextKind::InvalidValue) {
                        Some(ContextValue::String(v)) => v.is_empty() || is_placeholder(v),
                        _ => false,
                    } =>
            {
                Ok(())
            }
            _ => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
        },
    }
}

/// `<GROUP>` → `GROUP` (and not a redirection).
fn unbracket(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(a) = rest.find('<') {
        match rest[a..].find('>') {
            Some(b)
                if rest[a + 1..a + b]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                out.push_str(&rest[..a]);
                out.push_str(&rest[a + 1..a + b].to_ascii_uppercase());
                rest = &rest[a + b + 1..];
            }
            _ => {
                out.push_str(&rest[..=a]);
                rest = &rest[a + 1..];
            }
        }
    }
    out + rest
}

/// `FILE`, `<GROUP>`, `NAME`: a word that stands for a value.
fn is_placeholder(v: &str) -> bool {
    (v.starts_with('<') && v.ends_with('>'))
        || (!v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c == '-'))
}

/// `baton status …`, `baton --version`: words that can start a command line (and not
/// `baton CLI ──►` in a diagram or `baton epoch=<epoch>` in a route description).
fn looks_like_command(args: &[String]) -> bool {
    args.first().is_none_or(|a| {
        a.starts_with('-')
            || a.chars()
                .all(|c| c.is_ascii_lowercase() || c == '-' || c == '|' || c == '[')
    })
}

fn clear_env() {
    // The CLI reads these; the docs' lines must parse without them.
    for v in ["BATON_CONFIG", "BATON_SERVER", "BATON_TOKEN_FILE"] {
        assert!(
            std::env::var_os(v).is_none(),
            "unset {v} to run this test: the docs' command lines must parse without it"
        );
    }
}

/// Blocks whose lines may run `baton` (`ini`: a unit's `ExecStart=`).
const SHELL_BLOCKS: [&str; 6] = ["sh", "console", "bash", "text", "ini", ""];

#[test]
fn every_baton_command_line_parses() {
    clear_env();
    let mut failures = Vec::new();
    let (mut lines, mut refs, mut usages) = (0, 0, 0);
    for d in docs() {
        for b in &d.blocks {
            let lang = b.info.first().map(String::as_str).unwrap_or("");
            if !SHELL_BLOCKS.contains(&lang) {
                continue;
            }
            // Lines continued with a backslash are one command.
            let joined = b.text.replace("\\\n", " ");
            for (n, l) in joined.lines().enumerate() {
                if l.contains("docs-drift: wrong") {
                    continue;
                }
                let t = l.trim_start();
                if let Some(u) = t.strip_prefix("Usage: baton").or_else(|| {
                    // A usage's continuation line: `       baton keygen …`.
                    (l.starts_with("       baton ") && b.text.contains("Usage: baton"))
                        .then(|| t.strip_prefix("baton").unwrap())
                }) {
                    // `Usage: baton status [OPTIONS]   (--check …)`: the part before
                    // the parenthesised notes, then each note's flags.
                    // `<VALUE>` is a placeholder like `VALUE` (and not a redirection).
                    let u = &unbracket(&u.replace("<COMMAND>", ""));
                    let main = u.split("  (").next().unwrap_or(u);
                    let main = main.replace("[OPTIONS]", "");
                    let base: Vec<String> = words(&main).into_iter().map_while(|w| w).collect();
                    let mut cands = expand(&base);
                    for note in u.split('(').skip(1) {
                        let note = note.split(')').next().unwrap_or("");
                        for flag in note.split(", ") {
                            // `--check: one line …`: the flag and its `<VALUE>`, no prose.
                            let fw: Vec<String> = words(flag)
                                .into_iter()
                                .map_while(|w| w)
                                .take_while(|w| w.starts_with('-') || is_placeholder(w))
                                .map(|w| w.trim_end_matches(':').to_string())
                                .collect();
                            for mut c in expand(&base) {
                                c.extend(fw.iter().cloned());
                                cands.extend(expand(&c));
                            }
                        }
                    }
                    for c in cands {
                        usages += 1;
                        if let Err(e) = parse(&c, true) {
                            failures.push(format!(
                                "{}:{}: `{}`: {e}",
                                b.file,
                                b.line + 1 + n,
                                l.trim()
                            ));
                        }
                    }
                    continue;
                }
                let Some(args) = baton_args(l) else { continue };
                if !looks_like_command(&args) {
                    continue;
                }
                // Synopsis notation in a block (`[--key-file ...]`): a reference.
                let synopsis = args
                    .iter()
                    .any(|a| a.contains('[') || a.contains('<') || a.contains("...") || a == "…");
                for a in expand(&args) {
                    lines += 1;
                    if let Err(e) = parse(&a, synopsis) {
                        failures.push(format!(
                            "{}:{}: `{}`: {e}",
                            b.file,
                            b.line + 1 + n,
                            l.trim()
                        ));
                    }
                }
            }
        }
        for s in &d.inline {
            let t = s.text.strip_prefix("sudo ").unwrap_or(&s.text);
            let Some(rest) = t.strip_prefix("baton ") else {
                continue;
            };
            // In prose, ` | ` separates alternatives (`baton cloud check | iam-policy`).
            let rest = unbracket(&rest.replace(" | ", "|"));
            let args: Vec<String> = words(&rest).into_iter().map_while(|w| w).collect();
            if !looks_like_command(&args) {
                continue;
            }
            for a in expand(&args) {
                refs += 1;
                if let Err(e) = parse(&a, true) {
                    failures.push(format!("{}:{}: `{}`: {e}", s.file, s.line, s.text));
                }
            }
        }
        let _ = &d.file;
    }
    eprintln!(
        "command lines parsed: {lines} in code blocks, {refs} named inline, {usages} from usage lines"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        lines >= 50,
        "only {lines} command lines found in code blocks"
    );
    assert!(refs >= 200, "only {refs} inline command references found");
    assert!(usages >= 25, "only {usages} usage lines found");
}

#[test]
fn the_command_line_checks_catch_mistakes() {
    clear_env();
    let p = |l: &str, r: bool| parse(&expand(&baton_args(l).unwrap())[0], r);
    assert!(p("$ baton group move web --to node-2 --wait", false).is_ok());
    assert!(p("baton group move", true).is_ok());
    assert!(p("baton group move", false).is_err());
    assert!(p("baton group mvoe web", true).is_err());
    assert!(p("baton status --api 10.0.1.10 7420", true).is_err());
    assert!(p("sudo baton status --jsn", true).is_err());
    assert!(p("ExecStart=/usr/bin/baton agent --server node-1", false).is_ok());
    assert!(p("cargo run --release --bin baton -- demo", false).is_ok());
    assert!(baton_args("install -m 0755 target/release/baton /usr/local/bin/baton").is_none());
    assert_eq!(
        expand(&["group".into(), "start|stop".into(), "[--json]".into()]),
        vec![
            vec!["group".to_string(), "start".into(), "--json".into()],
            vec!["group".to_string(), "stop".into(), "--json".into()]
        ]
    );
}

// ---------------------------------------------------------------------------------
// The demo transcript
// ---------------------------------------------------------------------------------

fn getting_started() -> Doc {
    parse_doc("docs/src/getting-started.md")
}

fn num(s: &str) -> u64 {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: `{s}`"))
}

/// The default of one of `baton demo`'s options.
fn demo_default(long: &str) -> Option<String> {
    let cmd = Cli::command();
    let demo = cmd.find_subcommand("demo").unwrap();
    let arg = demo
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .unwrap_or_else(|| panic!("baton demo has no --{long}"));
    arg.get_default_values()
        .first()
        .map(|v| v.to_string_lossy().into_owned())
}

#[test]
fn the_demo_transcript_matches_the_demo() {
    let doc = getting_started();
    let block = doc
        .blocks
        .iter()
        .find(|b| b.text.starts_with("Baton demo:"))
        .expect("the demo transcript (a block starting `Baton demo:`) is gone");
    let t = &block.text;
    let at = |l: &str| format!("docs/src/getting-started.md transcript: `{l}`");

    // The agents, each on its own address and port.
    let port: u64 = num(&demo_default("port").unwrap());
    let started: Vec<&str> = t.lines().filter(|l| l.contains("started agent")).collect();
    assert_eq!(started.len(), 3, "{t}");
    for (i, l) in started.iter().enumerate() {
        let n = i as u64 + 1;
        let want_tail = format!("on 127.0.0.{}:{}", 10 + n, port + n);
        assert!(
            l.trim_start()
                .starts_with(&format!("started agent node-{n} (pid "))
                && l.ends_with(&want_tail),
            "{}: expected `started agent node-{n} (pid N) {want_tail}`",
            at(l)
        );
    }

    // The status, as render_status prints it.
    let header = t
        .lines()
        .find(|l| l.starts_with("Cluster demo (via "))
        .expect("no status header in the transcript");
    check_status_header(header).unwrap_or_else(|e| panic!("{}: {e}", at(header)));

    // State changes while failing over: `+  N ms  web: STATE on X; servers down: …`.
    let states = [
        "offline",
        "claiming",
        "adopting",
        "activating",
        "online",
        "deactivating",
        "failed",
        "stuck",
    ];
    let mut last = 0;
    let mut changes = 0;
    for l in t.lines().filter(|l| l.trim_start().starts_with('+')) {
        let (ms, rest) = l.trim_start()[1..]
            .split_once(" ms  web: ")
            .unwrap_or_else(|| {
                panic!(
                    "{}: expected `+ N ms  web: STATE on SERVER; servers down: …`",
                    at(l)
                )
            });
        let ms = num(ms);
        assert!(ms >= last, "{}: times must grow", at(l));
        last = ms;
        let state = rest.split(' ').next().unwrap();
        assert!(
            states.contains(&state),
            "{}: unknown group state `{state}`",
            at(l)
        );
        assert!(rest.contains("; servers down: "), "{}", at(l));
        changes += 1;
    }
    assert!(changes >= 2, "no state changes in the transcript");

    // The timeline: the events the demo reads, in order, and their numbers.
    let mut ids = Vec::new();
    let mut times = Vec::new();
    let mut total = None;
    let mut in_timeline = false;
    for l in t.lines() {
        if l.starts_with("Failover timeline") {
            in_timeline = true;
            continue;
        }
        if !in_timeline {
            continue;
        }
        let s = l.trim_start();
        if let Some(r) = s.strip_prefix("total ") {
            total = Some(num(r.split(" ms").next().unwrap()));
            break;
        }
        let (ms, rest) = s.split_once("  ").unwrap_or_else(|| panic!("{}", at(l)));
        times.push(num(ms));
        let id = rest
            .rsplit_once("(BTN-")
            .map(|(_, id)| format!("BTN-{}", id.trim_end_matches(')')));
        ids.push(id);
    }
    assert_eq!(
        ids,
        vec![
            None,
            Some("BTN-1102".to_string()),
            Some("BTN-2101".into()),
            Some("BTN-2102".into())
        ],
        "the timeline's event ids differ from those node-agent/src/demo.rs prints"
    );
    // The ids mean what the timeline says they do.
    let catalogue = std::fs::read_to_string(repo().join("docs/src/events.md")).unwrap();
    for (id, words) in [
        ("BTN-1102", "down"),
        ("BTN-2101", "activat"),
        ("BTN-2102", "activated"),
    ] {
        let heading = catalogue
            .lines()
            .find(|l| l.starts_with(&format!("| [{id}]")))
            .unwrap_or_else(|| panic!("{id} is not in docs/src/events.md"));
        assert!(heading.to_lowercase().contains(words), "{id}: `{heading}`");
    }
    assert_eq!(times[0], 0);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(
        total,
        times.last().copied(),
        "the total is the activation's time"
    );

    // The numbers against the demo's own configuration: detection after one heartbeat
    // timeout (less up to one interval: the last heartbeat came before the kill), the
    // activation after T + W_g (the same allowance).
    let interval = humantime::parse_duration(&demo_default("interval").unwrap()).unwrap();
    let timeout = humantime::parse_duration(&demo_default("timeout").unwrap()).unwrap();
    let (i_ms, t_ms) = (interval.as_millis() as u64, timeout.as_millis() as u64);
    let dir = tempfile::tempdir().unwrap();
    let text = baton_agent::demo::config_text(
        &baton_agent::demo::DemoOptions {
            dir: None,
            interval: demo_default("interval").unwrap(),
            timeout: demo_default("timeout").unwrap(),
            net: 0,
            port: port as u16,
            json: false,
        },
        dir.path(),
        Path::new("/usr/bin/baton"),
    );
    config_check(&text).unwrap();
    std::fs::write(dir.path().join("baton.toml"), &text).unwrap();
    let cfg = catalog::load_config(&dir.path().join("baton.toml")).unwrap();
    let takeover = cfg.group_timing(0, t_ms).takeover_after_ms();
    assert!(
        times[1] + i_ms >= t_ms,
        "detected at {} ms, T = {t_ms} ms",
        times[1]
    );
    assert!(
        times[2] + i_ms >= takeover,
        "activating at {} ms, T + W_g = {takeover} ms",
        times[2]
    );
    assert!(times[3] < takeover + 1000, "{times:?}");
    // The prose quotes T + W_g and the demo's heartbeat settings.
    let prose = &doc.text;
    assert!(
        prose.contains(&format!("({takeover} ms here)")),
        "getting-started.md should say T + W_g is ({takeover} ms here)"
    );
    assert!(
        prose.contains(&format!(
            "`interval = {}`",
            demo_default("interval").unwrap()
        )) && prose.contains(&format!("`timeout = {}`", demo_default("timeout").unwrap())),
        "getting-started.md should quote the demo's interval and timeout"
    );

    // The options table lists every option of `baton demo` with its default.
    let cmd = Cli::command();
    let demo = cmd.find_subcommand("demo").unwrap();
    for a in demo.get_arguments() {
        let Some(long) = a.get_long() else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        let row = prose
            .lines()
            .find(|l| l.starts_with(&format!("| `--{long}")))
            .unwrap_or_else(|| panic!("the demo's options table lacks --{long}"));
        if let Some(d) = a.get_default_values().first() {
            let d = d.to_string_lossy();
            assert!(
                row.contains(&format!("`{d}`")),
                "--{long}: default `{d}`: {row}"
            );
        }
    }
    // The --json fields are the Timeline's.
    let json = serde_json::to_value(baton_agent::demo::Timeline {
        killed: String::new(),
        new_owner: String::new(),
        detected_ms: None,
        floor_ms: None,
        activating_ms: None,
        activated_ms: 0,
        total_ms: 0,
        app_answer: String::new(),
    })
    .unwrap();
    let row = prose.lines().find(|l| l.starts_with("| `--json`")).unwrap();
    for k in json.as_object().unwrap().keys() {
        assert!(
            row.contains(&format!("`{k}`")),
            "--json row lacks `{k}`: {row}"
        );
    }
}

/// `Cluster NAME (via SERVER)  config 12HEX…  quorum yes (H/T votes[, witness W])`, as
/// `render_status` prints it.
fn check_status_header(l: &str) -> Result<(), String> {
    let rest = l.strip_prefix("Cluster ").ok_or("no `Cluster `")?;
    let (_, rest) = rest.split_once(" (via ").ok_or("no ` (via `")?;
    let (_, rest) = rest.split_once(")  config ").ok_or("no `)  config `")?;
    let (digest, rest) = rest.split_once("…  quorum ").ok_or("no `…  quorum `")?;
    if digest.len() != 12 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("digest `{digest}` is not 12 hex digits"));
    }
    let (yes, rest) = rest
        .split_once(" (")
        .ok_or("no ` (H/T votes)` after quorum")?;
    if yes != "yes" && yes != "NO" {
        return Err(format!("quorum `{yes}`"));
    }
    let (h, rest) = rest.split_once('/').ok_or("no H/T")?;
    let (tot, _) = rest.split_once(" votes").ok_or("no ` votes`")?;
    if h.parse::<u32>().is_err() || tot.parse::<u32>().is_err() {
        return Err("votes are not numbers".into());
    }
    Ok(())
}

#[test]
fn every_status_example_has_the_status_header() {
    let mut n = 0;
    let mut failures = Vec::new();
    for d in docs() {
        for b in &d.blocks {
            for (k, l) in b.text.lines().enumerate() {
                if l.starts_with("Cluster ") && l.contains(" (via ") {
                    n += 1;
                    if let Err(e) = check_status_header(l) {
                        failures.push(format!("{}:{}: `{l}`: {e}", b.file, b.line + 1 + k));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(n >= 3, "only {n} status examples found");
}

/// The README's claim: every command takes `--json` except `agent`, `witness`,
/// `completions` and `man`.
#[test]
fn every_command_but_the_named_ones_takes_json() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let claim = "every command takes\n  `--json` except `agent` and `witness` (long-running, logs), `completions` and `man`";
    assert!(
        readme.contains(claim),
        "the README's --json claim changed: update this test"
    );
    let except = ["agent", "witness", "completions", "man"];
    fn leaves(c: &clap::Command, path: String, out: &mut Vec<(String, bool)>) {
        let subs: Vec<&clap::Command> = c.get_subcommands().filter(|s| !s.is_hide_set()).collect();
        if subs.is_empty() {
            let json = c.get_arguments().any(|a| a.get_long() == Some("json"));
            out.push((path.clone(), json));
        }
        for s in subs {
            let p = if path.is_empty() {
                s.get_name().to_string()
            } else {
                format!("{path} {}", s.get_name())
            };
            leaves(s, p, out);
        }
    }
    let mut all = Vec::new();
    leaves(&Cli::command(), String::new(), &mut all);
    assert!(all.len() > 25, "{all:?}");
    let wrong: Vec<String> = all
        .iter()
        .filter(|(p, json)| *json == except.contains(&p.as_str()))
        .map(|(p, json)| {
            format!(
                "baton {p}: --json {}",
                if *json { "present" } else { "missing" }
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
