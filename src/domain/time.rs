//! Timestamps: UTC with microsecond precision, written RFC 3339 with `Z` (the strictest SDK,
//! TypeScript, accepts only that family) and stored as microseconds since the Unix epoch.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_micros(Utc::now().timestamp_micros())
    }

    pub fn from_micros(micros: i64) -> Self {
        Self(Utc.timestamp_micros(micros).single().unwrap_or_default())
    }

    /// This time `by` later.
    pub fn plus(&self, by: std::time::Duration) -> Self {
        Timestamp::from_micros(self.micros().saturating_add(i64::try_from(by.as_micros()).unwrap_or(i64::MAX)))
    }

    /// This time `by` earlier.
    pub fn minus(&self, by: std::time::Duration) -> Self {
        Timestamp::from_micros(self.micros().saturating_sub(i64::try_from(by.as_micros()).unwrap_or(i64::MAX)))
    }

    pub fn micros(&self) -> i64 {
        self.0.timestamp_micros()
    }

    pub fn unix_seconds(&self) -> i64 {
        self.0.timestamp()
    }

    pub fn rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339())
    }
}

// Stored entries are JSON written by palaver itself, so only its own format is read back.
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|dt| Timestamp(dt.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("invalid timestamp `{text}`: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_microseconds_and_z() {
        let ts = Timestamp::from_micros(1_750_065_376_726_715);

        assert_eq!(ts.rfc3339(), "2025-06-16T09:16:16.726715Z");
    }

    #[test]
    fn micros_round_trip() {
        let ts = Timestamp::now();

        assert_eq!(Timestamp::from_micros(ts.micros()), ts);
    }
}
