//! Facts about this instance from the instance metadata service (IMDSv2, through the
//! SDK's IMDS client: session token, retries, `AWS_EC2_METADATA_SERVICE_ENDPOINT`):
//! the ENI ID of the primary interface, the availability zone and the private address.
//! Used when a configuration omits `eni_id`, `zone` or `ip` and `[aws] imds` is on
//! (the seed's WebUI fetches them the same way). Each fact is fetched once.

use std::time::Duration;

use aws_config::imds::Client;

/// Which fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    EniId,
    Zone,
    LocalIpv4,
}

impl Fact {
    pub fn key(self) -> &'static str {
        match self {
            Fact::EniId => "eni_id",
            Fact::Zone => "zone",
            Fact::LocalIpv4 => "ip",
        }
    }
}

/// The IMDS client of one agent, with its answers cached.
#[derive(Debug)]
pub struct Imds {
    enabled: bool,
    endpoint: Option<String>,
    client: tokio::sync::OnceCell<Result<Client, String>>,
    eni: tokio::sync::OnceCell<String>,
    zone: tokio::sync::OnceCell<String>,
    ipv4: tokio::sync::OnceCell<String>,
}

impl Imds {
    pub fn new(enabled: bool) -> Imds {
        Imds {
            enabled,
            endpoint: None,
            client: tokio::sync::OnceCell::new(),
            eni: tokio::sync::OnceCell::new(),
            zone: tokio::sync::OnceCell::new(),
            ipv4: tokio::sync::OnceCell::new(),
        }
    }

    /// Use this endpoint (tests; otherwise the SDK's default or
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub fn with_endpoint(mut self, url: &str) -> Imds {
        self.endpoint = Some(url.to_string());
        self
    }

    async fn client(&self) -> Result<&Client, String> {
        let c = self
            .client
            .get_or_init(|| async {
                let mut b = Client::builder()
                    .max_attempts(2)
                    .connect_timeout(Duration::from_secs(1))
                    .read_timeout(Duration::from_secs(2));
                if let Some(e) = &self.endpoint {
                    b = b
                        .endpoint(e)
                        .map_err(|e| format!("invalid IMDS endpoint: {e}"))?;
                }
                Ok(b.build())
            })
            .await;
        c.as_ref().map_err(Clone::clone)
    }

    async fn get(&self, path: &str) -> Result<String, String> {
        let client = self.client().await?;
        let v = client
            .get(path)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let s: String = v.into();
        let s = s.trim().to_string();
        if s.is_empty() {
            Err(format!("GET {path}: empty answer"))
        } else {
            Ok(s)
        }
    }

    /// One fact, fetched once. Errors say why (disabled, not on EC2, ...).
    pub async fn fact(&self, fact: Fact) -> Result<String, String> {
        if !self.enabled {
            return Err(format!(
                "`{}` is not configured and `[aws] imds` is off",
                fact.key()
            ));
        }
        if self.endpoint.is_none()
            && std::env::var("AWS_EC2_METADATA_DISABLED")
                .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(format!(
                "`{}` is not configured and the instance metadata service is disabled \
                 (AWS_EC2_METADATA_DISABLED=true)",
                fact.key()
            ));
        }
        let cell = match fact {
            Fact::EniId => &self.eni,
            Fact::Zone => &self.zone,
            Fact::LocalIpv4 => &self.ipv4,
        };
        cell.get_or_try_init(|| async {
            match fact {
                Fact::EniId => {
                    let mac = self.get("/latest/meta-data/mac").await?;
                    self.get(&format!(
                        "/latest/meta-data/network/interfaces/macs/{mac}/interface-id"
                    ))
                    .await
                }
                Fact::Zone => {
                    self.get("/latest/meta-data/placement/availability-zone")
                        .await
                }
                Fact::LocalIpv4 => self.get("/latest/meta-data/local-ipv4").await,
            }
        })
        .await
        .cloned()
        .map_err(|e| {
            format!(
                "`{}` is not configured and the instance metadata service did not give it: {e}",
                fact.key()
            )
        })
    }
}
