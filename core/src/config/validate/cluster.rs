//! `[cluster]`: the cluster's name and the keys accepted during a key rotation.

use super::check_name;
use crate::config::diagnostics::{k, Diags, Seg};
use crate::config::raw::RawCluster;
use crate::config::MAX_ACCEPT_KEY_FILES;

/// The cluster's name (checked first of all).
pub(super) fn validate_name(d: &mut Diags<'_>, cluster: &RawCluster) {
    check_name(d, &[k("cluster"), k("name")], "cluster", &cluster.name);
}

/// `accept_key_files`: few, and none listed twice (checked after every other section).
pub(super) fn validate_accept_key_files(d: &mut Diags<'_>, cluster: &RawCluster) {
    if cluster.accept_key_files.len() > MAX_ACCEPT_KEY_FILES {
        d.err(
            &[k("cluster"), k("accept_key_files")],
            format!(
                "{} accepted key files: at most {MAX_ACCEPT_KEY_FILES} (a rotation needs one)",
                cluster.accept_key_files.len()
            ),
        );
    }
    for (i, f) in cluster.accept_key_files.iter().enumerate() {
        if f == &cluster.key_file || cluster.accept_key_files[..i].contains(f) {
            d.err(
                &[k("cluster"), k("accept_key_files"), Seg::Index(i)],
                format!(
                    "`{}` is listed twice (key_file is always accepted)",
                    f.display()
                ),
            );
        }
    }
}
