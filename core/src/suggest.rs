//! "Did you mean ...?" for misspelt keys and names: the one edit-distance rule every
//! crate uses (configuration keys in `core`, resource and monitor keys in the providers).

/// The candidate closest to `word` when it is close enough to be a typo: at most two
/// edits (Levenshtein, by characters) and fewer edits than the candidate has characters.
/// On a tie the first candidate wins.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_within_two_edits() {
        assert_eq!(
            closest("intervall", ["interval", "timeout"]),
            Some("interval")
        );
        assert_eq!(closest("strat", ["start", "stop"]), Some("start"));
        assert_eq!(closest("zzzzzz", ["start", "stop"]), None);
        // Not a suggestion that replaces the whole candidate.
        assert_eq!(closest("x", ["on", "to"]), None);
        // First of equally close candidates.
        assert_eq!(closest("sto", ["stop", "stow"]), Some("stop"));
        // Characters, not bytes.
        assert_eq!(closest("zöne", ["zone"]), Some("zone"));
        assert_eq!(strsim::levenshtein("", "abc"), 3);
    }
}
