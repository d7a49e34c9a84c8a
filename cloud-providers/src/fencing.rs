//! Fencing of cloud resources (design invariant 3): an activation leaves its group's
//! epoch on what it changes, and never overwrites a newer one.
//!
//! A resource carries a [`Mark`] per group: the epoch and server of the group's last
//! claim. Two formats hold it, and both are on the wire in real clouds, so they never
//! change:
//!
//! - a tag (route tables and Elastic IPs on AWS; labels of other clouds) with key
//!   `baton:<group>:epoch` and value `"<epoch> <server>"` ([`tag_key`], [`tag_value`]);
//! - a DNS TXT record `_baton.<name>` beside the record it fences, holding
//!   `"baton epoch=<epoch> server=<server> group=<group>"` ([`record_name`],
//!   [`record_value`]).
//!
//! The decisions are pure functions of the marks read and the activation, a [`Claim`]:
//! [`Claim::verdict`] (refused by a newer epoch, already ours, or to be written) and,
//! over several objects, [`Claim::refused_by`]. A refusal is
//! [`ProviderError::Fenced`] (code `fenced`).
//!
//! Mutations are read, decide, write, read again: the cloud drivers call the same
//! decision on what they read back, so a newer claim written meanwhile wins.

use crate::{ActionContext, ProviderError};

/// One group's mark on a resource: the epoch of its last claim and the server that made
/// it (empty when the mark names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub epoch: u64,
    pub server: String,
}

/// The marks of every group on one resource, in the order they were read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks(pub Vec<(String, Mark)>);

impl Marks {
    /// The marks among a resource's tags (`(key, value)`); other tags, and epoch tags
    /// whose value does not parse, are ignored.
    pub fn from_tags<'t>(tags: impl IntoIterator<Item = (&'t str, &'t str)>) -> Marks {
        Marks(
            tags.into_iter()
                .filter_map(|(k, v)| Some((tag_group(k)?.to_string(), parse_tag_value(v)?)))
                .collect(),
        )
    }

    /// The mark of `group` (the first, should a resource carry two).
    pub fn of(&self, group: &str) -> Option<&Mark> {
        self.0.iter().find(|(g, _)| g == group).map(|(_, m)| m)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `; tag baton:<group>:epoch = <epoch> <server>` for each mark: who claimed the
    /// resource, appended to messages saying it is not ours.
    pub fn notes(&self) -> String {
        self.0
            .iter()
            .map(|(g, m)| format!("; tag {} = {}", tag_key(g), tag_value(m.epoch, &m.server)))
            .collect()
    }
}

/// The tag key that records the epoch of a group's last claim.
pub fn tag_key(group: &str) -> String {
    format!("baton:{group}:epoch")
}

/// The group of an epoch tag's key, `None` for any other tag.
pub fn tag_group(key: &str) -> Option<&str> {
    key.strip_prefix("baton:")?.strip_suffix(":epoch")
}

/// `"<epoch> <server>"`, the value of the epoch tag.
pub fn tag_value(epoch: u64, server: &str) -> String {
    format!("{epoch} {server}")
}

/// The mark in an epoch tag's value (the server may be missing).
pub fn parse_tag_value(value: &str) -> Option<Mark> {
    let mut parts = value.split_whitespace();
    let epoch = parts.next()?.parse().ok()?;
    Some(Mark {
        epoch,
        server: parts.next().unwrap_or("").to_string(),
    })
}

/// The name of the epoch record of the DNS record `name`.
pub fn record_name(name: &str) -> String {
    format!("_baton.{name}")
}

/// The value of the epoch record a claim writes: `"baton epoch=N server=S group=G"`,
/// quoted as a TXT record's value is.
pub fn record_value(claim: &Claim<'_>) -> String {
    format!(
        "\"baton epoch={} server={} group={}\"",
        claim.epoch, claim.server, claim.group
    )
}

/// The mark in an epoch record's value, quoted or not (`None` without an epoch; the
/// group is not read: the record's name ties it to one resource).
pub fn parse_record_value(value: &str) -> Option<Mark> {
    let v = value.trim_matches('"');
    let mut epoch = None;
    let mut server = String::new();
    for part in v.split_whitespace() {
        if let Some(e) = part.strip_prefix("epoch=") {
            epoch = e.parse().ok();
        } else if let Some(s) = part.strip_prefix("server=") {
            server = s.to_string();
        }
    }
    epoch.map(|epoch| Mark { epoch, server })
}

/// What an activation may do with a resource, given its group's mark there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'m> {
    /// A newer epoch holds it: do not write (fencing).
    Refused(&'m Mark),
    /// It carries exactly this claim's mark (epoch and server): nothing to write.
    Ours,
    /// No mark, an older epoch, or the same epoch written by another server: write ours.
    Write,
}

/// An activation that writes resources: its group, epoch and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    pub group: &'a str,
    pub epoch: u64,
    pub server: &'a str,
}

impl<'a> From<&'a ActionContext> for Claim<'a> {
    fn from(ctx: &'a ActionContext) -> Self {
        Claim {
            group: &ctx.group,
            epoch: ctx.epoch,
            server: &ctx.server,
        }
    }
}

impl<'a> Claim<'a> {
    pub fn new(group: &'a str, epoch: u64, server: &'a str) -> Claim<'a> {
        Claim {
            group,
            epoch,
            server,
        }
    }

    /// The decision for a resource whose mark for this group is `mark`.
    pub fn verdict<'m>(&self, mark: Option<&'m Mark>) -> Verdict<'m> {
        match mark {
            Some(m) if m.epoch > self.epoch => Verdict::Refused(m),
            Some(m) if m.epoch == self.epoch && m.server == self.server => Verdict::Ours,
            _ => Verdict::Write,
        }
    }

    /// May this claim write a resource marked `mark`? Only a newer epoch says no.
    pub fn may_write(&self, mark: Option<&Mark>) -> bool {
        !matches!(self.verdict(mark), Verdict::Refused(_))
    }

    /// Of the marks on several objects (`(object, mark)`), the newest above this claim's
    /// epoch: the holder that refuses it (of equally new ones, the last listed).
    pub fn refused_by<'m, K>(
        &self,
        marks: impl IntoIterator<Item = (K, &'m Mark)>,
    ) -> Option<(K, &'m Mark)> {
        marks
            .into_iter()
            .max_by_key(|(_, m)| m.epoch)
            .filter(|(_, m)| m.epoch > self.epoch)
    }

    /// The refusal when `holder`, newer, holds `resource` (as messages name it, e.g.
    /// `route table rtb-0a1b2c3d`), in the standard words: `SUBJECT: RESOURCE is claimed
    /// for group G at epoch N by S, newer than this activation's epoch M; not
    /// overwriting it`.
    pub fn fenced(&self, subject: &str, resource: &str, holder: &Mark) -> ProviderError {
        let message = format!(
            "{subject}: {resource} is claimed for group {} at epoch {} by {}, newer than this \
             activation's epoch {}; not overwriting it",
            self.group, holder.epoch, holder.server, self.epoch
        );
        self.fenced_saying(resource, holder, message)
    }

    /// The refusal with the message a resource kind words itself.
    pub fn fenced_saying(&self, resource: &str, holder: &Mark, message: String) -> ProviderError {
        ProviderError::Fenced {
            resource: resource.to_string(),
            group: self.group.to_string(),
            holder: holder.server.clone(),
            epoch: holder.epoch,
            ours: self.epoch,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(epoch: u64, server: &str) -> Mark {
        Mark {
            epoch,
            server: server.to_string(),
        }
    }

    #[test]
    fn epoch_tags() {
        assert_eq!(tag_key("failover1"), "baton:failover1:epoch");
        assert_eq!(
            parse_tag_value(&tag_value(7, "node-2")),
            Some(mark(7, "node-2"))
        );
        assert_eq!(parse_tag_value("12"), Some(mark(12, "")));
        assert_eq!(parse_tag_value("x"), None);
        assert_eq!(tag_group("baton:web:epoch"), Some("web"));
        assert_eq!(tag_group("baton:web"), None);
        assert_eq!(tag_group("Name"), None);
    }

    #[test]
    fn marks_from_tags() {
        let m = Marks::from_tags([
            ("Name", "public"),
            ("baton:web:epoch", "3 node-2"),
            ("baton:db:epoch", "garbage"),
            ("baton:db2:epoch", "9"),
        ]);
        assert_eq!(m.of("web"), Some(&mark(3, "node-2")));
        assert_eq!(m.of("db"), None);
        assert_eq!(m.of("db2"), Some(&mark(9, "")));
        assert_eq!(
            m.notes(),
            "; tag baton:web:epoch = 3 node-2; tag baton:db2:epoch = 9 "
        );
        assert!(Marks::from_tags([("Name", "x")]).is_empty());
    }

    #[test]
    fn epoch_records() {
        let c = Claim::new("web", 7, "node-2");
        assert_eq!(
            record_name("db.example.internal."),
            "_baton.db.example.internal."
        );
        assert_eq!(
            record_value(&c),
            "\"baton epoch=7 server=node-2 group=web\""
        );
        assert_eq!(
            parse_record_value(&record_value(&c)),
            Some(mark(7, "node-2"))
        );
        assert_eq!(parse_record_value("baton epoch=3"), Some(mark(3, "")));
        assert_eq!(parse_record_value("\"baton server=node-1\""), None);
        assert_eq!(parse_record_value("\"baton epoch=x server=node-1\""), None);
    }

    #[test]
    fn verdicts() {
        let c = Claim::new("web", 5, "node-1");
        let newer = mark(6, "node-2");
        assert_eq!(c.verdict(Some(&newer)), Verdict::Refused(&newer));
        assert!(!c.may_write(Some(&newer)));
        assert_eq!(c.verdict(Some(&mark(5, "node-1"))), Verdict::Ours);
        // The same epoch written by another server, an older one, or none: ours to write.
        assert_eq!(c.verdict(Some(&mark(5, "node-2"))), Verdict::Write);
        assert_eq!(c.verdict(Some(&mark(4, "node-1"))), Verdict::Write);
        assert_eq!(c.verdict(None), Verdict::Write);
        assert!(c.may_write(None));
    }

    #[test]
    fn the_newest_holder_refuses() {
        let c = Claim::new("web", 5, "node-1");
        let (a, b, d) = (mark(4, "node-2"), mark(7, "node-3"), mark(7, "node-4"));
        assert_eq!(c.refused_by([("rtb-a", &a)]), None);
        assert_eq!(
            c.refused_by([("rtb-a", &a), ("rtb-b", &b), ("rtb-d", &d)]),
            Some(("rtb-d", &d))
        );
        assert_eq!(c.refused_by(std::iter::empty::<(&str, &Mark)>()), None);
        assert_eq!(c.refused_by([("rtb-a", &mark(5, "node-9"))]), None);
    }

    #[test]
    fn refusals() {
        let c = Claim::new("web", 6, "node-1");
        let e = c.fenced("resource vip1", "route table rtb-1", &mark(7, "node-2"));
        assert_eq!(
            e.to_string(),
            "resource vip1: route table rtb-1 is claimed for group web at epoch 7 by node-2, \
             newer than this activation's epoch 6; not overwriting it"
        );
        assert_eq!(e.code(), "fenced");
        assert!(!e.is_api_error());
        assert_eq!(
            e,
            ProviderError::Fenced {
                resource: "route table rtb-1".into(),
                group: "web".into(),
                holder: "node-2".into(),
                epoch: 7,
                ours: 6,
                message: e.to_string(),
            }
        );
    }
}
