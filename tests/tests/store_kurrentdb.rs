//! The event-store contract on KurrentDB/EventStoreDB. Runs only when
//! `MDM_TEST_EVENTSTOREDB_URL` is set; each test prints why it is skipped
//! otherwise.

use mdm_tests::backends::KurrentBackend;

mdm_tests::event_store_contract!(KurrentBackend::new());
