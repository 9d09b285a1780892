//! Timestamps: UTC with microsecond precision, written RFC 3339 with `Z` (the strictest SDK,
//! TypeScript, accepts only that family) and stored as microseconds since the Unix epoch.

use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, TimeZone, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().trunc_subsecs(6))
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
        self.with_rfc3339(str::to_owned)
    }

    /// Calls `use_text` with the RFC 3339 text, written on the stack when it can be.
    fn with_rfc3339<R>(&self, use_text: impl FnOnce(&str) -> R) -> R {
        let mut text = [0; RFC3339_LEN];
        match self.write_rfc3339(&mut text) {
            Some(text) => use_text(text),
            None => use_text(&self.0.to_rfc3339_opts(SecondsFormat::Micros, true)),
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` into `text`, for years 0–9999 (chrono writes the
    /// others with a sign). Digits by hand: chrono's formatter goes through `fmt` machinery
    /// that cost ~600 instructions a timestamp, and a response carries several.
    fn write_rfc3339<'a>(&self, text: &'a mut [u8; RFC3339_LEN]) -> Option<&'a str> {
        let year = u32::try_from(self.0.year()).ok().filter(|year| *year <= 9999)?;
        let fields = [
            (0, year, 4),
            (5, self.0.month(), 2),
            (8, self.0.day(), 2),
            (11, self.0.hour(), 2),
            (14, self.0.minute(), 2),
            (17, self.0.second(), 2),
            // A leap second's nanoseconds run past one second; the micros stay 6 digits.
            (20, (self.0.nanosecond() / 1_000) % 1_000_000, 6),
        ];
        *text = *b"0000-00-00T00:00:00.000000Z";
        for (at, mut value, digits) in fields {
            for place in (at..at + digits).rev() {
                text[place] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        std::str::from_utf8(text).ok()
    }
}

const RFC3339_LEN: usize = "0000-00-00T00:00:00.000000Z".len();

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_rfc3339(|text| serializer.serialize_str(text))
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

    proptest::proptest! {
        /// The hand-written digits are chrono's own, across every year the format holds
        /// and outside it (where chrono writes them).
        #[test]
        fn timestamps_are_written_as_chrono_writes_them(micros in -62_200_000_000_000_000i64..300_000_000_000_000_000) {
            let ts = Timestamp::from_micros(micros);

            proptest::prop_assert_eq!(ts.rfc3339(), ts.0.to_rfc3339_opts(SecondsFormat::Micros, true));
            proptest::prop_assert_eq!(serde_json::to_string(&ts).unwrap(), format!("\"{}\"", ts.rfc3339()));
        }
    }

    #[test]
    fn micros_round_trip() {
        let ts = Timestamp::now();

        assert_eq!(Timestamp::from_micros(ts.micros()), ts);
    }
}
