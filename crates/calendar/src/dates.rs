//! Dates in configuration files: `"2024-02-08"` strings, or TOML's bare local dates
//! (`2024-02-08`), which the TOML deserializer hands over as a one-entry map.

use std::fmt;

use chrono::NaiveDate;
use serde::Deserializer;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

struct DateVisitor;

impl<'de> Visitor<'de> for DateVisitor {
    type Value = NaiveDate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a date as YYYY-MM-DD")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NaiveDate, E> {
        NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
            .map_err(|e| E::custom(format!("invalid date {v:?}: {e}")))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NaiveDate, A::Error> {
        // TOML datetimes arrive as {"$__toml_private_datetime": "2024-02-08"}.
        let Some(_key) = map.next_key::<String>()? else {
            return Err(de::Error::custom("expected a date, found an empty table"));
        };
        let text: String = map.next_value()?;
        self.visit_str(&text)
    }
}

struct DatesVisitor;

impl<'de> Visitor<'de> for DatesVisitor {
    type Value = Vec<NaiveDate>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of dates as YYYY-MM-DD")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<NaiveDate>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(d) = seq.next_element::<Flexible>()? {
            out.push(d.0);
        }
        Ok(out)
    }
}

struct Flexible(NaiveDate);

impl<'de> serde::Deserialize<'de> for Flexible {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DateVisitor).map(Flexible)
    }
}

pub(crate) fn one<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    d.deserialize_any(DateVisitor)
}

pub(crate) fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NaiveDate>, D::Error> {
    d.deserialize_seq(DatesVisitor)
}
