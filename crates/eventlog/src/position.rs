//! [`Position`] and [`Version`]: the log's two counters as types, with checked conversions from
//! and to what they travel as (`BIGINT`/`INT` in PostgreSQL, `uint64`/`uint32` in the proto,
//! decimal text in NATS headers and on the command line). A value out of range is an error
//! naming what was wrong, never silently 0 or a wrapped number.

use std::fmt;
use std::str::FromStr;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

/// A global position in the log: `1, 2, 3…` for events, in commit order with no gap, and `0`
/// for "before the first event" (an empty log's head, a reader that has read nothing).
/// At most `i64::MAX`, because the column is `BIGINT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(u64);

/// Why a value is not a [`Position`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("a position cannot be negative ({0})")]
    Negative(i64),
    #[error("position {0} is beyond the largest possible position ({max})", max = i64::MAX)]
    TooLarge(u64),
    #[error("position {0:?} is not a decimal number")]
    NotANumber(String),
    /// Where an event's position is needed, 0 ("before the first") is not one.
    #[error("position 0 is not an event's position (events start at 1)")]
    NotAnEvent,
}

impl Position {
    /// Before the first event.
    pub const ZERO: Position = Position(0);
    /// The largest position the log can hold.
    pub const MAX: Position = Position(i64::MAX as u64);

    /// `value` as a position, if it is at most [`Position::MAX`].
    pub const fn new(value: u64) -> Result<Position, PositionError> {
        if value > i64::MAX as u64 {
            Err(PositionError::TooLarge(value))
        } else {
            Ok(Position(value))
        }
    }

    /// `value` as an event's position: at least 1 (0 is [`PositionError::NotAnEvent`]).
    pub fn of_event(value: u64) -> Result<Position, PositionError> {
        match Position::new(value)? {
            Position::ZERO => Err(PositionError::NotAnEvent),
            p => Ok(p),
        }
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// For the database (`BIGINT`): always fits.
    pub const fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// `n` positions further, if that is still a position.
    pub fn checked_add(self, n: u64) -> Option<Position> {
        self.0.checked_add(n).and_then(|v| Position::new(v).ok())
    }

    /// The position after this one, if any.
    pub fn next(self) -> Option<Position> {
        self.checked_add(1)
    }
}

impl TryFrom<i64> for Position {
    type Error = PositionError;
    fn try_from(value: i64) -> Result<Position, PositionError> {
        u64::try_from(value)
            .map(Position)
            .map_err(|_| PositionError::Negative(value))
    }
}

impl TryFrom<u64> for Position {
    type Error = PositionError;
    fn try_from(value: u64) -> Result<Position, PositionError> {
        Position::new(value)
    }
}

impl From<Position> for i64 {
    fn from(p: Position) -> i64 {
        p.as_i64()
    }
}

impl From<Position> for u64 {
    fn from(p: Position) -> u64 {
        p.0
    }
}

/// Decimal digits only (no sign, no blank): the form of the `Dossier-Position` header.
impl FromStr for Position {
    type Err = PositionError;
    fn from_str(text: &str) -> Result<Position, PositionError> {
        Position::new(decimal(text).ok_or_else(|| PositionError::NotANumber(text.to_owned()))?)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event's version within its dossier: `1` for its first event, then `2, 3…`. At most
/// `i32::MAX`, because the column is `INT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u32);

/// Why a value is not a [`Version`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("a version is at least 1 (not {0})")]
    NotPositive(i64),
    #[error("version {0} is beyond the largest possible version ({max})", max = i32::MAX)]
    TooLarge(u64),
    #[error("version {0:?} is not a decimal number")]
    NotANumber(String),
}

impl Version {
    /// A dossier's first event.
    pub const FIRST: Version = Version(1);
    /// The largest version the log can hold.
    pub const MAX: Version = Version(i32::MAX as u32);

    /// `value` as a version, if it is in `1..=Version::MAX`.
    pub const fn new(value: u32) -> Result<Version, VersionError> {
        if value == 0 {
            Err(VersionError::NotPositive(0))
        } else if value > i32::MAX as u32 {
            Err(VersionError::TooLarge(value as u64))
        } else {
            Ok(Version(value))
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    /// For the database (`INT`): always fits.
    pub const fn as_i32(self) -> i32 {
        self.0 as i32
    }

    /// The version after this one, if any.
    pub fn next(self) -> Option<Version> {
        self.0.checked_add(1).and_then(|v| Version::new(v).ok())
    }
}

impl TryFrom<i64> for Version {
    type Error = VersionError;
    fn try_from(value: i64) -> Result<Version, VersionError> {
        match u64::try_from(value) {
            Ok(v) => Version::try_from(v),
            Err(_) => Err(VersionError::NotPositive(value)),
        }
    }
}

impl TryFrom<i32> for Version {
    type Error = VersionError;
    fn try_from(value: i32) -> Result<Version, VersionError> {
        Version::try_from(i64::from(value))
    }
}

impl TryFrom<u64> for Version {
    type Error = VersionError;
    fn try_from(value: u64) -> Result<Version, VersionError> {
        let v = u32::try_from(value).map_err(|_| VersionError::TooLarge(value))?;
        Version::new(v)
    }
}

impl TryFrom<u32> for Version {
    type Error = VersionError;
    fn try_from(value: u32) -> Result<Version, VersionError> {
        Version::new(value)
    }
}

impl From<Version> for i32 {
    fn from(v: Version) -> i32 {
        v.as_i32()
    }
}

impl From<Version> for i64 {
    fn from(v: Version) -> i64 {
        i64::from(v.0)
    }
}

impl From<Version> for u32 {
    fn from(v: Version) -> u32 {
        v.0
    }
}

impl From<Version> for u64 {
    fn from(v: Version) -> u64 {
        u64::from(v.0)
    }
}

/// Decimal digits only (no sign, no blank): the form of the `Dossier-Version` header.
impl FromStr for Version {
    type Err = VersionError;
    fn from_str(text: &str) -> Result<Version, VersionError> {
        Version::try_from(decimal(text).ok_or_else(|| VersionError::NotANumber(text.to_owned()))?)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A non-empty run of ASCII digits that fits in a u64 (`u64::from_str` alone accepts `+1`).
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

// In PostgreSQL, a position is a BIGINT and a version an INT: `.bind(p)` and `row.get` work as
// with the integers, and decoding refuses a stored value out of range instead of passing it on.

impl Type<Postgres> for Position {
    fn type_info() -> PgTypeInfo {
        <i64 as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <i64 as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Position {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Postgres>>::encode_by_ref(&self.as_i64(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Position {
    fn decode(value: PgValueRef<'r>) -> Result<Position, BoxDynError> {
        Ok(Position::try_from(<i64 as Decode<Postgres>>::decode(
            value,
        )?)?)
    }
}

impl sqlx::postgres::PgHasArrayType for Position {
    fn array_type_info() -> PgTypeInfo {
        <i64 as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

impl Type<Postgres> for Version {
    fn type_info() -> PgTypeInfo {
        <i32 as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <i32 as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Version {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <i32 as Encode<Postgres>>::encode_by_ref(&self.as_i32(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Version {
    fn decode(value: PgValueRef<'r>) -> Result<Version, BoxDynError> {
        Ok(Version::try_from(<i32 as Decode<Postgres>>::decode(
            value,
        )?)?)
    }
}

impl sqlx::postgres::PgHasArrayType for Version {
    fn array_type_info() -> PgTypeInfo {
        <i32 as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_from_integers() {
        assert_eq!(Position::try_from(0_i64), Ok(Position::ZERO));
        assert_eq!(Position::try_from(7_i64).map(Position::get), Ok(7));
        assert_eq!(Position::try_from(i64::MAX), Ok(Position::MAX));
        assert_eq!(Position::try_from(-1_i64), Err(PositionError::Negative(-1)));
        assert_eq!(
            Position::try_from(i64::MIN),
            Err(PositionError::Negative(i64::MIN))
        );
        assert_eq!(Position::try_from(i64::MAX as u64), Ok(Position::MAX));
        let over = i64::MAX as u64 + 1;
        assert_eq!(Position::try_from(over), Err(PositionError::TooLarge(over)));
        assert_eq!(
            Position::try_from(u64::MAX),
            Err(PositionError::TooLarge(u64::MAX))
        );
        assert_eq!(i64::from(Position::MAX), i64::MAX);
        assert_eq!(u64::from(Position::new(42).unwrap()), 42);
        assert_eq!(Position::of_event(0), Err(PositionError::NotAnEvent));
        assert_eq!(Position::of_event(1).map(Position::get), Ok(1));
        assert_eq!(Position::MAX.next(), None);
        assert_eq!(Position::ZERO.next().map(Position::get), Some(1));
        assert_eq!(Position::ZERO.checked_add(u64::MAX), None);
    }

    #[test]
    fn positions_from_text() {
        assert_eq!("0".parse::<Position>(), Ok(Position::ZERO));
        assert_eq!("12".parse::<Position>().map(Position::get), Ok(12));
        assert_eq!("9223372036854775807".parse(), Ok(Position::MAX));
        assert_eq!(
            "9223372036854775808".parse::<Position>(),
            Err(PositionError::TooLarge(9_223_372_036_854_775_808))
        );
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "0x10",
            "abc",
            "١٢",
            "18446744073709551616",
        ] {
            assert_eq!(
                bad.parse::<Position>(),
                Err(PositionError::NotANumber(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(Position::MAX.to_string(), "9223372036854775807");
    }

    #[test]
    fn versions_from_integers() {
        assert_eq!(Version::try_from(1_i32), Ok(Version::FIRST));
        assert_eq!(Version::try_from(0_i32), Err(VersionError::NotPositive(0)));
        assert_eq!(
            Version::try_from(-5_i32),
            Err(VersionError::NotPositive(-5))
        );
        assert_eq!(Version::try_from(i32::MAX), Ok(Version::MAX));
        assert_eq!(Version::try_from(0_u32), Err(VersionError::NotPositive(0)));
        let over = i32::MAX as u32 + 1;
        assert_eq!(
            Version::try_from(over),
            Err(VersionError::TooLarge(u64::from(over)))
        );
        assert_eq!(
            Version::try_from(u64::from(u32::MAX) + 1),
            Err(VersionError::TooLarge(u64::from(u32::MAX) + 1))
        );
        assert_eq!(
            Version::try_from(i64::MIN),
            Err(VersionError::NotPositive(i64::MIN))
        );
        assert_eq!(
            Version::try_from(i64::from(i32::MAX) + 1),
            Err(VersionError::TooLarge(u64::from(i32::MAX as u32) + 1))
        );
        assert_eq!(i32::from(Version::MAX), i32::MAX);
        assert_eq!(u32::from(Version::FIRST), 1);
        assert_eq!(Version::MAX.next(), None);
        assert_eq!(Version::FIRST.next().map(Version::get), Some(2));
    }

    #[test]
    fn versions_from_text() {
        assert_eq!("1".parse::<Version>(), Ok(Version::FIRST));
        assert_eq!("0".parse::<Version>(), Err(VersionError::NotPositive(0)));
        assert_eq!(
            "2147483648".parse::<Version>(),
            Err(VersionError::TooLarge(2_147_483_648))
        );
        for bad in ["", "-1", "+2", "2 ", "v2", "99999999999999999999"] {
            assert_eq!(
                bad.parse::<Version>(),
                Err(VersionError::NotANumber(bad.to_owned())),
                "{bad:?}"
            );
        }
    }
}
