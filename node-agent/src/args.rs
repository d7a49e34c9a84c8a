//! The arguments several `baton` commands share: the configuration file and this
//! server's name. One definition each, so that every command spells, defaults and reads
//! them from the environment the same way.

use std::path::PathBuf;

/// `-c, --config FILE` (default `/etc/baton/baton.toml`, or `$BATON_CONFIG`).
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// Cluster configuration file.
    #[arg(
        long,
        short = 'c',
        env = "BATON_CONFIG",
        default_value = "/etc/baton/baton.toml"
    )]
    pub config: PathBuf,
}

/// `-s, --server NAME` (or `$BATON_SERVER`): the server this command runs as.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArg {
    /// Name of this server in the configuration.
    #[arg(long, short = 's', env = "BATON_SERVER")]
    pub server: String,
}
