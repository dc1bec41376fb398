//! Diagnostics as Terraform shows them: a summary, a detail, and the
//! attribute they are about.

use crate::admin::AdminError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A step of the path to an attribute (the provider's diagnostics are
/// about attributes, never about list elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Attribute(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub summary: String,
    pub detail: String,
    /// Empty when it is about no attribute in particular.
    pub attribute: Vec<Step>,
}

impl Diagnostic {
    pub fn error(summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            summary: summary.into(),
            detail: detail.into(),
            attribute: Vec::new(),
        }
    }

    pub fn warning(summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(summary, detail)
        }
    }

    /// About the attribute at `path` (`["limits", "burst"]`).
    pub fn at(mut self, path: &[&str]) -> Self {
        self.attribute = path
            .iter()
            .map(|s| Step::Attribute((*s).to_owned()))
            .collect();
        self
    }
}

/// An error from the admin API, about the attribute whose name its message
/// mentions first among `attributes` (paths, the last name being the one
/// the API uses), or about none.
pub fn from_admin(summary: &str, error: &AdminError, attributes: &[&[&str]]) -> Diagnostic {
    let message = error.message();
    let at = attributes
        .iter()
        .filter_map(|path| {
            let word = path.last()?;
            mentions(&message, word).map(|i| (i, *path))
        })
        .min_by_key(|(i, path)| (*i, std::cmp::Reverse(path.len())))
        .map(|(_, path)| path);
    let d = Diagnostic::error(summary, message);
    match at {
        Some(path) => d.at(path),
        None => d,
    }
}

/// Where `word` first appears in `text` as a whole word (`plan` in "unknown
/// plan", not in "plans" nor in "planned").
fn mentions(text: &str, word: &str) -> Option<usize> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(message: &str) -> AdminError {
        AdminError::Api {
            status: reqwest::StatusCode::BAD_REQUEST,
            message: message.to_owned(),
        }
    }

    #[test]
    fn an_admin_error_names_the_attribute_its_message_is_about() {
        let attrs: &[&[&str]] = &[
            &["plan"],
            &["pin"],
            &["cache_threshold"],
            &["limits", "burst"],
        ];
        let d = from_admin(
            "x",
            &api("unknown plan \"gold\"; plans are free, standard"),
            attrs,
        );
        assert_eq!(d.attribute, vec![Step::Attribute("plan".into())]);
        let d = from_admin("x", &api("cache_threshold must be in (0, 1], got 2"), attrs);
        assert_eq!(d.attribute, vec![Step::Attribute("cache_threshold".into())]);
        let d = from_admin("x", &api("burst must be at least 1"), attrs);
        assert_eq!(
            d.attribute,
            vec![
                Step::Attribute("limits".into()),
                Step::Attribute("burst".into())
            ]
        );
        let d = from_admin("x", &api("the control-plane store is unavailable"), attrs);
        assert!(d.attribute.is_empty());
        assert_eq!(d.detail, "the control-plane store is unavailable");
    }
}
