//! The AWS client factory (credentials, region, endpoint, timeouts, retries, failure
//! classification, deadlines) is `baton_cloud_client::aws`, shared with the notifier's
//! SNS and CloudWatch sinks. This module adds what only the providers need: the clients
//! of the services they call ([`AwsServices`]) and a classified failure as a
//! [`ProviderError`].

pub use baton_cloud_client::aws::*;

use crate::ProviderError;

/// The SDK clients of the services the AWS resources, monitors and witnesses call.
pub trait AwsServices {
    fn ec2(&self) -> aws_sdk_ec2::Client;
    fn route53(&self) -> aws_sdk_route53::Client;
    /// S3 with path-style addressing when an endpoint override is set (emulators and
    /// VPC endpoints do not serve virtual-hosted bucket names).
    fn s3(&self) -> aws_sdk_s3::Client;
    fn dynamodb(&self) -> aws_sdk_dynamodb::Client;
}

impl AwsServices for AwsClients {
    fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(self.sdk_config())
    }

    fn route53(&self) -> aws_sdk_route53::Client {
        aws_sdk_route53::Client::new(self.sdk_config())
    }

    /// S3 with path-style addressing when an endpoint override is set (emulators and
    /// VPC endpoints do not serve virtual-hosted bucket names).
    fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(self.sdk_config())
            .force_path_style(self.s3_path_style())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(self.sdk_config())
    }
}

impl From<AwsFailure> for ProviderError {
    fn from(f: AwsFailure) -> Self {
        match f {
            AwsFailure::Unavailable {
                operation,
                code,
                status,
                message,
            } => ProviderError::Api {
                operation,
                code,
                status,
                message,
            },
            AwsFailure::Rejected {
                operation,
                code,
                status,
                message,
            } => ProviderError::Rejected {
                operation,
                code,
                status,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classified_failures_keep_their_texts_as_provider_errors() {
        let f = AwsFailure::Unavailable {
            operation: "ReplaceRoute".into(),
            code: Some("RequestLimitExceeded".into()),
            status: Some(503),
            message: "slow down".into(),
        };
        let p = ProviderError::from(f);
        assert!(p.is_api_error());
        assert_eq!(
            p.to_string(),
            "API error: ReplaceRoute: RequestLimitExceeded (HTTP 503): slow down"
        );
        let f = AwsFailure::Rejected {
            operation: "ReplaceRoute".into(),
            code: "InvalidRouteTableID.NotFound".into(),
            status: Some(400),
            message: "no such table".into(),
        };
        assert_eq!(
            f.to_string(),
            "InvalidRouteTableID.NotFound: ReplaceRoute: no such table"
        );
        let p = ProviderError::from(f);
        assert!(!p.is_api_error());
        assert_eq!(p.code(), "other");
        assert_eq!(
            p.to_string(),
            "InvalidRouteTableID.NotFound: ReplaceRoute: no such table"
        );
    }
}
