//! The Google Cloud fake (`tests/gcp/fake.py`) for tests: started per test on a free port
//! with the venv's python (the discovery documents come with the venv's
//! `google-api-python-client`), killed on drop. Cloud DNS, Compute, the OAuth token
//! endpoint and the metadata server are all served on that one port; the control API
//! (`/_fake/...`) seeds objects, makes service-account keys, injects faults and a second
//! writer, and lists what did not conform to Google's discovery documents
//! ([`GcpFake::assert_no_violations`], which every test calls last).
//!
//! The default world (see tests/gcp/README.md): project [`PROJECT`], instances `node-1`
//! (10.128.0.2) and `node-2` (10.128.0.3), managed zones `public-zone` (`example.com.`)
//! and `private-zone` (`internal.example.`), health check `baton-hc` and backend service
//! `baton-ilb`.
//!
//! [`GcpFake::start`] returns `None` (and records the skip) when python is missing,
//! unless `BATON_REQUIRE_ALL=1`, where that is a failure.
//!
//! [`start_cluster`] runs three real `baton agent` processes against the fake:
//! `node-1` and `node-2` for the groups and `node-3` for the third vote, each with its own
//! VM's metadata server (`GCE_METADATA_HOST` = the fake's `/_vm/<server>`), Cloud DNS and
//! Compute at the fake. Dropping it kills the agents (their logs are printed when the
//! test is failing).

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cloud_cluster::CloudCluster;
use crate::http;

/// The project of the default world.
pub const PROJECT: &str = "baton-test";
/// The service account of the default world.
pub const SERVICE_ACCOUNT: &str = "baton@baton-test.iam.gserviceaccount.com";
/// A managed zone of the default world and its DNS name.
pub const PUBLIC_ZONE: &str = "public-zone";
pub const PUBLIC_DNS: &str = "example.com.";
pub const PRIVATE_ZONE: &str = "private-zone";
pub const PRIVATE_DNS: &str = "internal.example.";

/// A running Google Cloud fake; killed on drop.
pub struct GcpFake {
    child: Child,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`: every Google endpoint (DNS, Compute, metadata, token).
    pub endpoint: String,
}

impl GcpFake {
    /// Start the fake on 127.0.0.1 (free port) with the default world. `None` = skipped
    /// (recorded).
    pub fn start() -> Option<GcpFake> {
        let Some(py) = crate::moto::python() else {
            crate::skip::skip(
                &crate::skip::current_test("gcp"),
                "the test venv is missing: run `bash tests/moto/setup.sh` (tests/run-all.sh does)",
            );
            return None;
        };
        let (child, port) =
            crate::moto::start_python_server(&py, "tests/gcp", "fake.py", &[], "Google Cloud fake");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("socket address");
        Some(GcpFake {
            child,
            addr,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The metadata server of one VM of the fake (`/_vm/<instance>`).
    pub fn vm_metadata(&self, instance: &str) -> String {
        format!("{}/_vm/{instance}", self.endpoint)
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.endpoint)
    }

    /// Call the control API; panics on a transport error or a status >= 400.
    pub fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let text = body.map(|b| b.to_string());
        let r = http::request(
            self.addr,
            method,
            path,
            None,
            text.as_deref(),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("Google Cloud fake control {method} {path}: {e}"));
        assert!(
            r.status < 400,
            "Google Cloud fake control {method} {path}: HTTP {}: {}",
            r.status,
            r.body
        );
        r.json().unwrap_or(Value::Null)
    }

    /// Add objects (the format of `DEFAULT_SEED` in fake.py).
    pub fn seed(&self, spec: Value) {
        self.control("POST", "/_fake/seed", Some(spec));
    }

    /// Change settings (`dns_change_delay_ms`, `operation_delay_ms`, ...).
    pub fn settings(&self, settings: Value) {
        self.control("POST", "/_fake/settings", Some(settings));
    }

    /// A new service-account key file (JSON text, `token_uri` the fake's) for `email`.
    pub fn service_account_key(&self, email: &str) -> String {
        self.control(
            "POST",
            "/_fake/service-account-keys",
            Some(json!({ "email": email })),
        )
        .to_string()
    }

    /// A change made by hand (`/_fake/mutate`, see tests/gcp/README.md for actions).
    pub fn mutate(&self, action: Value) {
        self.control("POST", "/_fake/mutate", Some(action));
    }

    /// Set (or delete with `rrdatas` = None) a record set as someone else would.
    pub fn hand_edit(
        &self,
        zone: &str,
        name: &str,
        rrtype: &str,
        ttl: u32,
        rrdatas: Option<&[&str]>,
    ) {
        let mut action =
            json!({"type": "rrset", "zone": zone, "name": name, "rrtype": rrtype, "ttl": ttl});
        match rrdatas {
            Some(d) => action["rrdatas"] = json!(d),
            None => action["delete"] = json!(true),
        }
        self.mutate(action);
    }

    /// After a request matching `method` and `path` (regex) was answered, someone else
    /// applies `action` (once).
    pub fn second_writer(&self, method: &str, path: &str, action: Value) {
        self.control(
            "POST",
            "/_fake/second-writer",
            Some(json!({"after": {"method": method, "path": path}, "action": action})),
        );
    }

    /// Add a fault (`/_fake/faults`, see tests/gcp/README.md).
    pub fn fault(&self, fault: Value) {
        self.control("POST", "/_fake/faults", Some(fault));
    }

    pub fn clear_faults(&self) {
        self.control("DELETE", "/_fake/faults", None);
    }

    /// A record set of a managed zone as the API has it (`{"name","type","ttl",
    /// "rrdatas"}`; `None` when absent), from `/_fake/state`.
    pub fn rrset(&self, zone: &str, name: &str, rrtype: &str) -> Option<Value> {
        let state = self.control("GET", "/_fake/state", None);
        state["projects"][PROJECT]["managedZones"][zone]["rrsets"]
            .as_array()?
            .iter()
            .find(|r| {
                r["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
                    && r["type"].as_str() == Some(rrtype)
            })
            .cloned()
    }

    /// The values of a record set (`None` when absent).
    pub fn rrdatas(&self, zone: &str, name: &str, rrtype: &str) -> Option<Vec<String>> {
        self.rrset(zone, name, rrtype).map(|r| {
            r["rrdatas"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// What the zone's name servers answer (changes that are done only): the values, or
    /// `None` when nothing.
    pub fn answer(&self, zone: &str, name: &str, rrtype: &str) -> Option<Vec<String>> {
        let r = self.control(
            "GET",
            &format!("/_fake/dns/answer?zone={zone}&name={name}&type={rrtype}"),
            None,
        );
        r["rrdatas"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    }

    /// The request log: (method, path, op, status) in order.
    pub fn log(&self) -> Vec<(String, String, String, u16)> {
        let v = self.control("GET", "/_fake/log", None);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        Some((
                            e["method"].as_str()?.to_string(),
                            e["path"].as_str()?.to_string(),
                            e["op"].as_str().unwrap_or("").to_string(),
                            u16::try_from(e["status"].as_u64()?).ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The statuses of the requests whose `op` (discovery method id, `oauth.token`,
    /// `metadata.<path>`, `fault`) is `op`, in order.
    pub fn statuses(&self, op: &str) -> Vec<u16> {
        self.log()
            .into_iter()
            .filter(|(_, _, o, _)| o == op)
            .map(|(_, _, _, s)| s)
            .collect()
    }

    /// What did not conform to Google's discovery documents so far.
    pub fn violations(&self) -> Value {
        self.control("GET", "/_fake/violations", None)
    }

    /// Every test ends with this: each request and response conformed to the discovery
    /// documents.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.as_array().is_some_and(Vec::is_empty),
            "requests or responses that do not conform to the discovery documents: {v:#}"
        );
    }
}

impl Drop for GcpFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three agents against the fake (`node-3` is seeded as a VM too); each agent gets its
/// own VM's metadata server (`GCE_METADATA_HOST`: credentials, address, instance).
/// `body` is the TOML of the groups and monitors.
pub fn start_cluster(fake: &GcpFake, name: &str, net: u8, body: &str) -> CloudCluster {
    fake.seed(
        json!({"instances": [{"name": "node-3", "zone": "us-central1-c",
                                    "networkIP": "10.128.0.4"}]}),
    );
    let preamble = format!(
        "[gcp]\ndns_endpoint = \"{ep}\"\ncompute_endpoint = \"{ep}\"\ncall_timeout = \"3s\"\n\
         deadline = \"15s\"\n",
        ep = fake.endpoint,
    );
    let fake_addr = fake.addr.to_string();
    CloudCluster::start_with(
        "gcp",
        name,
        net,
        ["us-central1-a", "us-central1-b", "us-central1-c"],
        &preamble,
        Box::new(move |node: &str| {
            vec![
                ("GCE_METADATA_HOST", Some(format!("{fake_addr}/_vm/{node}"))),
                ("GOOGLE_APPLICATION_CREDENTIALS", None),
            ]
        }),
        body,
    )
}
