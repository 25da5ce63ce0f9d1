//! Tests that cross crates: the event-store contract and the backends it
//! runs on. Test files live in `tests/tests/`.
//!
//! PostgreSQL is found through one variable, `MDM_TEST_DATABASE_URL`
//! (default `postgres://postgres:postgres@127.0.0.1:5432/postgres`); each
//! test gets a database of its own, dropped when the test ends. KurrentDB
//! tests run only when `MDM_TEST_EVENTSTOREDB_URL` is set.

pub mod backends;
pub mod contract;
pub mod fixtures;
