//! The API's bearer tokens: the cluster key's (the agents; everything), the role tokens
//! derived from the key (`baton token --role`), and the issued ones in token files.
//! Every presented token is compared with each accepted one in constant time.

use baton_core::config::ApiRole;

use crate::key::{ClusterKey, Keys};

/// Who is calling, as the API checks it (ordered by what they may do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Caller {
    Read,
    Operator,
    /// The cluster key's token: the agents themselves (and root with the key file).
    Peer,
}

impl Caller {
    pub(crate) fn of_role(r: ApiRole) -> Caller {
        match r {
            ApiRole::Read => Caller::Read,
            ApiRole::Operator => Caller::Operator,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Caller::Read => "read",
            Caller::Operator => "operator",
            Caller::Peer => "cluster key",
        }
    }
}

/// The tokens the API accepts, by role.
#[derive(Clone)]
pub struct ApiTokens {
    /// The primary key's token (sent to peers), then those of the other keys of the ring.
    peer: Vec<String>,
    operator: Vec<String>,
    read: Vec<String>,
}

/// Label of a role token derived from the cluster key (HMAC of it, lowercase hex).
fn role_label(role: ApiRole) -> Vec<u8> {
    format!("baton api token v1 role={}", role.as_str()).into_bytes()
}

/// The token of `role` derived from the cluster key (`baton token --role ROLE`).
pub fn derived_token(key: &ClusterKey, role: ApiRole) -> String {
    hex::encode(key.mac(&[&role_label(role)]))
}

impl ApiTokens {
    /// The tokens of every key of the ring (during a rotation a token of either key
    /// works), their derived role tokens (when `derived`) and the issued ones.
    pub fn new<K: Keys + ?Sized>(
        keys: &K,
        derived: bool,
        issued_read: Vec<String>,
        issued_operator: Vec<String>,
    ) -> ApiTokens {
        let mut read = issued_read;
        let mut operator = issued_operator;
        let mut peer = Vec::new();
        for key in keys.all() {
            peer.push(key.api_token());
            if derived {
                read.push(derived_token(key, ApiRole::Read));
                operator.push(derived_token(key, ApiRole::Operator));
            }
        }
        ApiTokens {
            peer,
            operator,
            read,
        }
    }

    /// The primary key's token (what the agent sends to its peers).
    pub fn peer(&self) -> &str {
        // `new` puts the primary key's token first; a ring always has a primary key.
        self.peer.first().map_or("", String::as_str)
    }

    /// The caller a presented token stands for. Every accepted token is compared, in
    /// constant time each, so the time taken does not tell which one nearly matched.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        let p = presented.trim().as_bytes();
        let mut found = None;
        let all = self
            .peer
            .iter()
            .map(|t| (Caller::Peer, t))
            .chain(self.operator.iter().map(|t| (Caller::Operator, t)))
            .chain(self.read.iter().map(|t| (Caller::Read, t)));
        for (c, t) in all {
            if constant_time_eq(p, t.as_bytes()) && found.is_none_or(|f| c > f) {
                found = Some(c);
            }
        }
        found
    }
}

/// Longest token file read (a token file of `/dev/zero` must not exhaust memory).
const MAX_TOKENS_FILE: u64 = 64 * 1024;
/// Shortest issued token accepted.
pub const MIN_TOKEN_LEN: usize = 32;

/// Read a file of issued tokens: one per line, `#` comments and blank lines ignored. The
/// file must not be readable or writable by others, each token has at least
/// [`MIN_TOKEN_LEN`] characters of visible ASCII.
pub fn load_tokens_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("token file {shown} is not a regular file"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o006 != 0 {
        return Err(format!(
            "token file {shown} is accessible to other users (mode {:03o}): chmod o-rwx {shown}",
            mode & 0o777
        ));
    }
    let mut text = String::new();
    f.take(MAX_TOKENS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    if text.len() as u64 > MAX_TOKENS_FILE {
        return Err(format!(
            "token file {shown} is larger than {MAX_TOKENS_FILE} bytes"
        ));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.len() < MIN_TOKEN_LEN || !t.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "{shown}:{}: a token must be at least {MIN_TOKEN_LEN} visible ASCII characters without spaces (e.g. `openssl rand -hex 32`)",
                i + 1
            ));
        }
        out.push(t.to_string());
    }
    Ok(out)
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key() -> ClusterKey {
        ClusterKey::from_bytes(b"unit test cluster key, 32 bytes at least").unwrap()
    }

    #[test]
    fn tokens_map_to_callers() {
        let k = key();
        let issued_op = "an issued operator token 0123456789".replace(' ', "-");
        let t = ApiTokens::new(&k, true, vec![], vec![issued_op.clone()]);
        assert_eq!(t.caller(&k.api_token()), Some(Caller::Peer));
        assert_eq!(
            t.caller(&derived_token(&k, ApiRole::Operator)),
            Some(Caller::Operator)
        );
        assert_eq!(
            t.caller(&derived_token(&k, ApiRole::Read)),
            Some(Caller::Read)
        );
        assert_eq!(t.caller(&issued_op), Some(Caller::Operator));
        // Surrounding whitespace is ignored; anything else is no caller.
        assert_eq!(
            t.caller(&format!(" {} ", derived_token(&k, ApiRole::Read))),
            Some(Caller::Read)
        );
        assert_eq!(t.caller(""), None);
        assert_eq!(t.caller(&"0".repeat(64)), None);
        assert_eq!(t.caller(&k.api_token()[..63]), None);
        // Derived tokens off: only the key's token and the issued ones.
        let t = ApiTokens::new(&k, false, vec![], vec![issued_op.clone()]);
        assert_eq!(t.caller(&derived_token(&k, ApiRole::Read)), None);
        assert_eq!(t.caller(&derived_token(&k, ApiRole::Operator)), None);
        assert_eq!(t.caller(&issued_op), Some(Caller::Operator));
        assert_eq!(t.caller(&k.api_token()), Some(Caller::Peer));
        // Fixed derivation: a change would invalidate every token handed out.
        assert_eq!(
            derived_token(&k, ApiRole::Read),
            hex::encode(k.mac(&[b"baton api token v1 role=read"]))
        );
        assert!(Caller::Read < Caller::Operator && Caller::Operator < Caller::Peer);
    }

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        let write = |text: &str, mode: u32| {
            std::fs::write(&f, text).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let good = "x".repeat(MIN_TOKEN_LEN);
        write(&format!("# comment\n\n  {good}  \n{good}y\n"), 0o600);
        assert_eq!(
            load_tokens_file(&f).unwrap(),
            vec![good.clone(), format!("{good}y")]
        );
        write(&format!("{good}\n"), 0o640);
        assert!(load_tokens_file(&f).is_ok());
        write(&format!("{good}\n"), 0o644);
        let e = load_tokens_file(&f).unwrap_err();
        assert!(e.contains("accessible to other users (mode 644)"), "{e}");
        write("short\n", 0o600);
        let e = load_tokens_file(&f).unwrap_err();
        assert!(e.ends_with(&format!(":1: a token must be at least {MIN_TOKEN_LEN} visible ASCII characters without spaces (e.g. `openssl rand -hex 32`)")), "{e}");
        write(&format!("{good}\nwith space {good}\n"), 0o600);
        assert!(load_tokens_file(&f).unwrap_err().contains(":2: "));
        write(&"y".repeat(70_000), 0o600);
        let e = load_tokens_file(&f).unwrap_err();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        let e = load_tokens_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.starts_with("cannot read token file"), "{e}");
        let e = load_tokens_file(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
