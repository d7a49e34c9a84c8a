//! Amazon CloudWatch: the metrics sink. One `PutMetricData` call per chunk made by
//! [`crate::metrics::chunk`] (at most 1000 datums and about 900 kB), each datum with
//! `Values` / `Counts` (at most 150 distinct values), a timestamp, a unit and its
//! dimensions.
//!
//! Protocol note: aws-sdk-cloudwatch 1.100 and later speak Smithy RPC v2 CBOR (`POST
//! /service/GraniteServiceVersion20100801/operation/PutMetricData`, header
//! `smithy-protocol: rpc-v2-cbor`), which is what CloudWatch wants today. The test
//! emulator (moto 5.2.5) only knows the JSON and query protocols, so the test harness
//! translates CBOR to JSON and back (`tests/moto/cbor_shim.py`); this code runs the
//! current SDK unchanged. See docs/src/notifications.md.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_smithy_types::DateTime;
use baton_cloud_client::aws::{call, AwsClients};

use crate::metrics::{Datum, MetricsSink, Unit};
use crate::sink::SinkError;
use crate::sns::to_sink_error;

pub struct CloudWatchSink {
    name: String,
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    deadline: Duration,
}

impl std::fmt::Debug for CloudWatchSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWatchSink")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl CloudWatchSink {
    /// Build from the shared AWS client factory.
    pub fn new(clients: &AwsClients, namespace: &str) -> CloudWatchSink {
        let per_call = Duration::from_millis(clients.settings().call_timeout.ms());
        let attempts = clients.settings().max_attempts.max(1);
        CloudWatchSink {
            name: "cloudwatch".into(),
            client: aws_sdk_cloudwatch::Client::new(clients.sdk_config()),
            namespace: namespace.to_string(),
            deadline: per_call * attempts + Duration::from_secs(1),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn client(&self) -> &aws_sdk_cloudwatch::Client {
        &self.client
    }
}

fn unit(u: Unit) -> StandardUnit {
    match u {
        Unit::Milliseconds => StandardUnit::Milliseconds,
        Unit::Count => StandardUnit::Count,
        Unit::None => StandardUnit::None,
    }
}

/// The SDK form of one datum.
pub fn to_metric_datum(d: &Datum) -> MetricDatum {
    let mut b = MetricDatum::builder()
        .metric_name(&d.name)
        .unit(unit(d.unit))
        .timestamp(DateTime::from_millis(
            i64::try_from(d.timestamp_ms).unwrap_or(i64::MAX),
        ))
        .storage_resolution(d.storage_resolution);
    for (k, v) in &d.dims {
        b = b.dimensions(Dimension::builder().name(k).value(v).build());
    }
    if d.values.len() == 1 && d.counts.first().copied().unwrap_or(1.0) == 1.0 {
        b = b.value(d.values[0]);
    } else {
        b = b
            .set_values(Some(d.values.clone()))
            .set_counts(Some(d.counts.clone()));
    }
    b.build()
}

#[async_trait]
impl MetricsSink for CloudWatchSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn put(&self, data: &[Datum]) -> Result<(), SinkError> {
        if data.is_empty() {
            return Ok(());
        }
        let fut = self
            .client
            .put_metric_data()
            .namespace(&self.namespace)
            .set_metric_data(Some(data.iter().map(to_metric_datum).collect()))
            .send();
        call("cloudwatch.PutMetricData", self.deadline, fut)
            .await
            .map(|_| ())
            .map_err(to_sink_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datums_map_to_the_sdk() {
        let d = Datum {
            name: "MonitorPollingTime".into(),
            unit: Unit::Milliseconds,
            dims: vec![
                ("Cluster".into(), "c".into()),
                ("Monitor".into(), "m".into()),
            ],
            values: vec![1.5, 3.0],
            counts: vec![2.0, 1.0],
            timestamp_ms: 1_700_000_000_123,
            storage_resolution: 60,
        };
        let m = to_metric_datum(&d);
        assert_eq!(m.metric_name(), Some("MonitorPollingTime"));
        assert_eq!(m.values(), &[1.5, 3.0]);
        assert_eq!(m.counts(), &[2.0, 1.0]);
        assert_eq!(m.value(), None);
        assert_eq!(m.dimensions().len(), 2);
        assert_eq!(m.unit(), Some(&StandardUnit::Milliseconds));
        assert_eq!(
            m.timestamp().map(|t| t.to_millis().ok()),
            Some(Some(1_700_000_000_123))
        );
        let single = Datum {
            values: vec![7.0],
            counts: vec![1.0],
            ..d
        };
        let m = to_metric_datum(&single);
        assert_eq!(m.value(), Some(7.0));
        assert!(m.values().is_empty());
    }
}
