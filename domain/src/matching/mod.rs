//! Matching: deciding whether two source records describe the same person.
//!
//! The pipeline, each step a pure function:
//! - `normalize`: text folding and per-attribute normalizers (names with
//!   nicknames and suffixes, emails, phones to E.164, street lines, postcodes);
//! - `features`: a record's canonical attributes turned into the normalized
//!   values the comparisons read (`MatchFeatures`);
//! - `blocking`: cheap keys that put likely matches together, several per
//!   record so that one typo does not hide a match;
//! - `compare`: per attribute, the level of agreement of two records
//!   (exact, close by a string-similarity band, different, missing);
//! - `model`: Fellegi-Sunter m/u probabilities per level, the match weight of
//!   a pair with its explanation, the household evidence cap and the three
//!   bands (link, review, new);
//! - `em`: estimating the m/u probabilities from unlabelled data.

pub mod blocking;
pub mod compare;
pub mod em;
pub mod features;
pub mod model;
mod nicknames;
pub mod normalize;
