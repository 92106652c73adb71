//! `--retry-for` and `--max-retries`: how long, and how many times, a
//! trigger that fails on a transient error is retried before the run stops.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// How long a failing trigger is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `--retry-for`: the time budget of one outage (`None`: unlimited).
    pub budget: Option<Duration>,
    /// `--max-retries`: a count limit within the budget, if any.
    pub max_retries: Option<u32>,
}

impl RetryPolicy {
    /// `--retry-for` and `--max-retries`.
    pub(crate) fn parse(retry_for: &str, max_retries: Option<u32>) -> Result<Self> {
        Ok(RetryPolicy { budget: parse_retry_for(retry_for)?, max_retries })
    }

    /// Whether an outage that began `waited` ago, after `retries` retries,
    /// may be retried once more.
    pub fn allows(&self, waited: Duration, retries: u32) -> bool {
        self.budget.is_none_or(|budget| waited < budget) && self.max_retries.is_none_or(|max| retries < max)
    }

    /// What is left of the budget after `waited` (`None`: unlimited).
    pub fn remaining(&self, waited: Duration) -> Option<Duration> {
        self.budget.map(|budget| budget.saturating_sub(waited))
    }
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.budget {
            Some(budget) => write!(f, "--retry-for {}", humantime::format_duration(budget))?,
            None => write!(f, "--retry-for unlimited")?,
        }
        if let Some(max) = self.max_retries {
            write!(f, " --max-retries {max}")?;
        }
        Ok(())
    }
}

/// `--retry-for`: a duration or `unlimited`.
fn parse_retry_for(value: &str) -> Result<Option<Duration>> {
    match value.trim() {
        "unlimited" => Ok(None),
        v => match super::parse::parse_duration("--retry-for", v)? {
            d if d.is_zero() => Err(Error::config("--retry-for", "must be longer than 0 (or `unlimited`)")),
            d => Ok(Some(d)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_for_takes_a_duration_or_unlimited() {
        assert_eq!(parse_retry_for("10m").unwrap(), Some(Duration::from_secs(600)));
        assert_eq!(parse_retry_for("unlimited").unwrap(), None);
        let zero = parse_retry_for("0s").unwrap_err().to_string();
        assert!(zero.contains("--retry-for") && zero.contains("longer than 0"), "{zero}");
        let bad = parse_retry_for("ten minutes").unwrap_err().to_string();
        assert!(bad.contains("--retry-for") && bad.contains("'ten minutes'"), "{bad}");
    }

    #[test]
    fn an_outage_is_retried_within_the_budget_and_the_count() {
        let policy = RetryPolicy { budget: Some(Duration::from_secs(60)), max_retries: None };
        assert!(policy.allows(Duration::from_secs(59), 1_000));
        assert!(!policy.allows(Duration::from_secs(60), 1));
        let counted = RetryPolicy { budget: None, max_retries: Some(3) };
        assert!(counted.allows(Duration::from_secs(86_400), 2));
        assert!(!counted.allows(Duration::ZERO, 3));
        assert_eq!(counted.to_string(), "--retry-for unlimited --max-retries 3");
    }
}
