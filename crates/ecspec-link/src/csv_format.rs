//! [`CsvFormat`]: the throughput-trace layouts a CSV trace may have, by name (the command
//! line's `--link-csv-format`), and the [`CsvColumns`] each reads in each direction.

use std::fmt;
use std::str::FromStr;

use crate::csv_trace::CsvColumns;
use crate::model::Direction;

/// A named CSV trace layout: `irish-5g`, `gophers-walking` or `gophers-driving:CARRIER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvFormat {
    /// The Irish 5G dataset ([`CsvColumns::irish_5g`]): both directions, with signal metrics.
    Irish5g,
    /// 5Gophers' walking trace ([`CsvColumns::gophers_walking`]): the downlink.
    GophersWalking,
    /// 5Gophers' car-driving traces of one carrier ([`CsvColumns::gophers_driving`]): the
    /// downlink.
    GophersDriving(GophersCarrier),
}

/// A carrier of 5Gophers' car-driving traces, spelt as in their column names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GophersCarrier {
    /// `Sprint`.
    Sprint,
    /// `TMobile`.
    TMobile,
    /// `Verizon`.
    Verizon,
}

impl GophersCarrier {
    /// Every carrier.
    pub const ALL: [Self; 3] = [Self::Sprint, Self::TMobile, Self::Verizon];

    /// The name in the traces' column names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sprint => "Sprint",
            Self::TMobile => "TMobile",
            Self::Verizon => "Verizon",
        }
    }
}

impl CsvFormat {
    /// The columns read for the (uplink, downlink) traces; None: the format does not shape
    /// that direction.
    pub fn columns(self) -> (Option<CsvColumns>, Option<CsvColumns>) {
        match self {
            Self::Irish5g => (
                Some(CsvColumns::irish_5g(Direction::Uplink)),
                Some(CsvColumns::irish_5g(Direction::Downlink)),
            ),
            Self::GophersWalking => (None, Some(CsvColumns::gophers_walking())),
            Self::GophersDriving(c) => (None, Some(CsvColumns::gophers_driving(c.as_str()))),
        }
    }
}

/// A name that is not a [`CsvFormat`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected irish-5g, gophers-walking or gophers-driving:Sprint|TMobile|Verizon")]
pub struct UnknownCsvFormat;

impl FromStr for CsvFormat {
    type Err = UnknownCsvFormat;

    /// `irish-5g`, `gophers-walking` or `gophers-driving:` and a carrier, exactly.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "irish-5g" => Ok(Self::Irish5g),
            "gophers-walking" => Ok(Self::GophersWalking),
            _ => s
                .strip_prefix("gophers-driving:")
                .and_then(|c| GophersCarrier::ALL.into_iter().find(|k| k.as_str() == c))
                .map(Self::GophersDriving)
                .ok_or(UnknownCsvFormat),
        }
    }
}

impl fmt::Display for CsvFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Irish5g => f.write_str("irish-5g"),
            Self::GophersWalking => f.write_str("gophers-walking"),
            Self::GophersDriving(c) => write!(f, "gophers-driving:{}", c.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_from_and_display_as_their_names() {
        for name in [
            "irish-5g",
            "gophers-walking",
            "gophers-driving:Sprint",
            "gophers-driving:TMobile",
            "gophers-driving:Verizon",
        ] {
            let f: CsvFormat = name.parse().unwrap();
            assert_eq!(f.to_string(), name);
        }
        for bad in [
            "",
            "Irish-5g",
            "irish-5g ",
            "gophers-driving",
            "gophers-driving:",
            "gophers-driving:ATT",
            "gophers-driving:sprint",
            "gophers-walking:Sprint",
        ] {
            assert_eq!(bad.parse::<CsvFormat>(), Err(UnknownCsvFormat), "{bad:?}");
        }
        let (up, down) = CsvFormat::Irish5g.columns();
        assert_eq!(up, Some(CsvColumns::irish_5g(Direction::Uplink)));
        assert_eq!(down, Some(CsvColumns::irish_5g(Direction::Downlink)));
        let (up, down) = CsvFormat::GophersDriving(GophersCarrier::TMobile).columns();
        assert_eq!(up, None);
        assert_eq!(down, Some(CsvColumns::gophers_driving("TMobile")));
    }
}
