//! Sorting database errors into what a caller can act on, by error code and
//! constraint name, never by message text.

use crate::{AppendError, BoxError, ReadError};

/// What a failed SQL call means to an adapter.
#[derive(Debug)]
pub(crate) enum SqlFailure {
    /// A unique constraint was violated. PostgreSQL names the constraint;
    /// SQLite does not, so there it is `None`.
    UniqueViolation { constraint: Option<String> },
    /// The database cannot be reached, is shutting down, is busy past its
    /// timeout or out of resources: the same call may work later.
    Unavailable(BoxError),
    /// Anything else.
    Other(BoxError),
}

impl SqlFailure {
    /// Sorts a database error by its code: a PostgreSQL SQLSTATE or a SQLite
    /// extended result code (as decimal text).
    pub(crate) fn from_code(code: &str, constraint: Option<String>, error: BoxError) -> SqlFailure {
        if is_unique_violation(code) {
            SqlFailure::UniqueViolation { constraint }
        } else if is_transient(code) {
            SqlFailure::Unavailable(error)
        } else {
            SqlFailure::Other(error)
        }
    }
}

impl From<sqlx::Error> for SqlFailure {
    fn from(e: sqlx::Error) -> SqlFailure {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => SqlFailure::Unavailable(Box::new(e)),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let constraint = db.constraint().map(str::to_owned);
                SqlFailure::from_code(&code, constraint, Box::new(e))
            }
            _ => SqlFailure::Other(Box::new(e)),
        }
    }
}

/// PostgreSQL SQLSTATE 23505, SQLite extended codes 2067 (UNIQUE) and 1555 (PRIMARY KEY).
fn is_unique_violation(code: &str) -> bool {
    matches!(code, "23505" | "2067" | "1555")
}

/// PostgreSQL: connection exceptions (class 08), insufficient resources
/// (class 53), operator intervention (57P01 admin shutdown, 57P02 crash
/// shutdown, 57P03 cannot connect now), serialization failure and deadlock
/// (40001, 40P01). SQLite: BUSY (5 and its extended codes), LOCKED (6), FULL (13),
/// IOERR (10 and extended codes ending in 10 when taken mod 256).
fn is_transient(code: &str) -> bool {
    if code.starts_with("08") || code.starts_with("53") {
        return true;
    }
    // 3D000: the database does not exist (dropped, or not yet restored).
    if matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "3D000") {
        return true;
    }
    match code.parse::<u32>() {
        Ok(n) => matches!(n & 0xff, 5 | 6 | 10 | 13),
        Err(_) => false,
    }
}

impl From<SqlFailure> for AppendError {
    fn from(f: SqlFailure) -> AppendError {
        match f {
            SqlFailure::Unavailable(e) => AppendError::Unavailable(e),
            SqlFailure::Other(e) => AppendError::Internal(e),
            SqlFailure::UniqueViolation { constraint } => AppendError::Internal(
                format!(
                    "unexpected unique violation on {}",
                    constraint.as_deref().unwrap_or("a constraint")
                )
                .into(),
            ),
        }
    }
}

impl From<SqlFailure> for ReadError {
    fn from(f: SqlFailure) -> ReadError {
        match f {
            SqlFailure::Unavailable(e) => ReadError::Unavailable(e),
            SqlFailure::Other(e) => ReadError::Internal(e),
            SqlFailure::UniqueViolation { .. } => ReadError::Internal("unique violation on a read".into()),
        }
    }
}

pub(crate) fn read_err(e: sqlx::Error) -> ReadError {
    SqlFailure::from(e).into()
}

pub(crate) fn append_err(e: sqlx::Error) -> AppendError {
    SqlFailure::from(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_recognised_on_both_databases() {
        let cases = [
            ("08006", true),  // PostgreSQL connection failure
            ("57P01", true),  // PostgreSQL admin shutdown
            ("53300", true),  // PostgreSQL too many connections
            ("40001", true),  // PostgreSQL serialization failure
            ("42P01", false), // PostgreSQL undefined table
            ("5", true),      // SQLite BUSY
            ("517", true),    // SQLite BUSY_SNAPSHOT
            ("13", true),     // SQLite FULL
            ("1", false),     // SQLite ERROR
            ("2067", false),  // SQLite UNIQUE is a constraint, not transient
        ];
        for (code, transient) in cases {
            assert_eq!(is_transient(code), transient, "code {code}");
        }
        assert!(is_unique_violation("23505") && is_unique_violation("2067") && is_unique_violation("1555"));
    }
}
