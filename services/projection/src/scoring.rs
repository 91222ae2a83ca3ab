//! The 766 scoring configuration (`stats::scorecard::ScoringConfig`): the shipped
//! `deploy/config/scorecard-766.toml` (compiled in, the default) or the file
//! `[projection] scorecard_766_file` names, checked at start.

use std::path::Path;

use stats::scorecard::ScoringConfig;

/// The shipped scoring, compiled in.
pub const SHIPPED: &str = include_str!("../../../deploy/config/scorecard-766.toml");

/// Parses and validates a scoring file's text.
pub fn parse(text: &str) -> Result<ScoringConfig, String> {
    let config: ScoringConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The shipped scoring; without versions (every scorecard "no version in force") only if the
/// compiled-in file were invalid, which a unit test rules out.
pub fn shipped() -> ScoringConfig {
    parse(SHIPPED).unwrap_or(ScoringConfig {
        versions: Vec::new(),
    })
}

/// The scoring of `path`, or the shipped one when none is configured.
pub fn load(path: Option<&Path>) -> Result<ScoringConfig, String> {
    match path {
        None => parse(SHIPPED),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            parse(&text).map_err(|e| format!("{}: {e}", p.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_scoring_is_valid() {
        let config = super::parse(super::SHIPPED).unwrap();
        assert_eq!(config.versions.len(), 1);
    }
}
