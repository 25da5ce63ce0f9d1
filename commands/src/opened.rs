//! Reading source-record events back in plaintext, at the edges that need
//! it (the resolver, projections, a right-to-know export).
//!
//! [`SourceRecordOpener::open`] turns a stored event into what it says. A
//! record whose data key is missing or destroyed reads as
//! [`OpenedEvent::Erased`]: erasure is a normal state of the log, never an
//! error that stops a projection. Keys are cached (unwrapped) for the
//! opener's lifetime, bounded in number, so a replay of the log does not
//! ask the key store once per event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mdm_domain::metadata::EventMetadata;
use mdm_domain::resolution::events::{Decided, Decision, SealedValue, RESOLUTION_STREAM};
use mdm_domain::source_record::{
    self, RetractionContent, RetractionReason, SourceRecordContent, SourceRecordRetracted, SourceRecordVersion,
};
use mdm_domain::survivorship::GoldenValue;
use mdm_store::keys::{DataKey, KeyStore, KeyStoreError, SubjectKey};
use mdm_store::RecordedEvent;
use uuid::Uuid;

use crate::ingest::open;

/// What a source-record event says, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenedEvent {
    /// A captured or changed version, in plaintext.
    Version {
        system: String,
        /// True for `SourceRecordCaptured`.
        captured: bool,
        content: Box<SourceRecordContent>,
    },
    /// A retraction, with the source's announcement when it sent one.
    Retracted {
        system: String,
        reason: RetractionReason,
        content: Option<RetractionContent>,
    },
    /// The record's key is gone: its person was erased. Nothing personal
    /// can be read from this event any more.
    Erased { system: String },
    /// A steward's override decision (`ValueOverridden`), its value opened:
    /// `None` when the override's key is gone (erased).
    Override { value: Option<GoldenValue> },
    /// Not a source-record event, or one this build cannot decode (the
    /// position says which; it is skipped, not fatal).
    Other,
}

/// Bumped each time this process destroys keys (an erasure): every
/// opener drops its cached keys when it sees a new value, so no opener of
/// the process decrypts with a key the key store no longer holds.
static KEYS_DESTROYED: AtomicU64 = AtomicU64::new(0);

/// Tells every opener of this process that keys were destroyed.
pub fn keys_destroyed() {
    KEYS_DESTROYED.fetch_add(1, Ordering::SeqCst);
}

/// Opens source-record events with the key store's keys.
#[derive(Debug, Clone)]
pub struct SourceRecordOpener {
    keys: Arc<dyn KeyStore>,
    cache: Arc<Mutex<KeyCache>>,
    capacity: usize,
}

/// Unwrapped keys by id (`None`: destroyed or unknown), valid for one
/// generation of [`KEYS_DESTROYED`].
#[derive(Debug, Default)]
struct KeyCache {
    generation: u64,
    keys: HashMap<Uuid, Option<DataKey>>,
}

impl KeyCache {
    /// The cache, emptied first if keys were destroyed since it was filled.
    fn current(&mut self) -> &mut HashMap<Uuid, Option<DataKey>> {
        let now = KEYS_DESTROYED.load(Ordering::SeqCst);
        if now != self.generation {
            self.keys.clear();
            self.generation = now;
        }
        &mut self.keys
    }
}

impl SourceRecordOpener {
    /// An opener caching at most `capacity` keys (cleared when full).
    pub fn new(keys: Arc<dyn KeyStore>, capacity: usize) -> SourceRecordOpener {
        SourceRecordOpener {
            keys,
            cache: Arc::new(Mutex::new(KeyCache::default())),
            capacity: capacity.max(1),
        }
    }

    /// Forgets cached keys, e.g. after an erasure destroyed some.
    pub fn forget(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.keys.clear();
        }
    }

    /// Opens one event. Fails only when the key store does not answer.
    pub async fn open(&self, event: &RecordedEvent) -> Result<OpenedEvent, KeyStoreError> {
        Ok(self
            .open_all(std::slice::from_ref(event))
            .await?
            .pop()
            .unwrap_or(OpenedEvent::Other))
    }

    /// Opens a page of events, fetching the keys it needs in one call.
    pub async fn open_all(&self, events: &[RecordedEvent]) -> Result<Vec<OpenedEvent>, KeyStoreError> {
        let key_ids: Vec<Option<Uuid>> = events
            .iter()
            .map(|e| match override_value(e) {
                Some((_, value)) => Some(value.key_id),
                None => e.metadata.decode::<EventMetadata>().ok().and_then(|m| m.key_id),
            })
            .collect();
        loop {
            // A destruction announced while keys were being read makes the
            // read start over: no key read before it is used or cached.
            let generation = KEYS_DESTROYED.load(Ordering::SeqCst);
            let missing: Vec<Uuid> = {
                let mut guard = self.cache.lock().map_err(|_| poisoned())?;
                let cache = guard.current();
                let mut missing: Vec<Uuid> = key_ids
                    .iter()
                    .flatten()
                    .filter(|id| !cache.contains_key(id))
                    .copied()
                    .collect();
                missing.sort_unstable();
                missing.dedup();
                missing
            };
            let found = if missing.is_empty() {
                Vec::new()
            } else {
                self.keys.by_ids(&missing).await?
            };
            let mut guard = self.cache.lock().map_err(|_| poisoned())?;
            if KEYS_DESTROYED.load(Ordering::SeqCst) != generation {
                continue;
            }
            let cache = guard.current();
            let fetched: HashMap<Uuid, Option<DataKey>> = missing
                .into_iter()
                .zip(found)
                .map(|(id, key)| {
                    let key = match key {
                        Some(SubjectKey::Active { key, .. }) => Some(key),
                        Some(SubjectKey::Destroyed { .. }) | None => None,
                    };
                    (id, key)
                })
                .collect();
            let opened = events
                .iter()
                .zip(&key_ids)
                .map(|(event, key_id)| {
                    let key = key_id.and_then(|id| match fetched.get(&id) {
                        Some(k) => k.clone(),
                        None => cache.get(&id).cloned().flatten(),
                    });
                    open_with(event, key.as_ref())
                })
                .collect();
            // Bounded: when full, the cache starts again with this page's
            // keys (after the page was opened with every key it needed).
            if cache.len() + fetched.len() > self.capacity {
                cache.clear();
            }
            cache.extend(fetched);
            return Ok(opened);
        }
    }
}

fn poisoned() -> KeyStoreError {
    KeyStoreError::Internal("the key cache lock was poisoned".into())
}

/// The override id and sealed value of a `ValueOverridden` decision event.
fn override_value(event: &RecordedEvent) -> Option<(Uuid, SealedValue)> {
    if event.stream != RESOLUTION_STREAM || event.event_type != "ValueOverridden" {
        return None;
    }
    match event.data.decode::<Decided>().ok()?.decision {
        Decision::ValueOverridden { override_id, value, .. } => Some((override_id, value)),
        _ => None,
    }
}

/// Opens `event` with `key` (`None`: the key is gone).
pub(crate) fn open_with(event: &RecordedEvent, key: Option<&DataKey>) -> OpenedEvent {
    if let Some((override_id, value)) = override_value(event) {
        let value = key.and_then(|k| open::<GoldenValue>(k, &SealedValue::subject(override_id), &value.sealed));
        return OpenedEvent::Override { value };
    }
    match event.event_type.as_str() {
        source_record::CAPTURED | source_record::CHANGED => {
            let Ok(payload) = event.data.decode::<SourceRecordVersion>() else {
                return OpenedEvent::Other;
            };
            let Some(key) = key else {
                return OpenedEvent::Erased { system: payload.system };
            };
            match open::<SourceRecordContent>(key, &event.stream, &payload.sealed) {
                Some(content) => OpenedEvent::Version {
                    system: payload.system,
                    captured: event.event_type == source_record::CAPTURED,
                    content: Box::new(content),
                },
                None => OpenedEvent::Other,
            }
        }
        source_record::RETRACTED => {
            let Ok(payload) = event.data.decode::<SourceRecordRetracted>() else {
                return OpenedEvent::Other;
            };
            match (&payload.sealed, key) {
                (Some(_), None) => OpenedEvent::Erased { system: payload.system },
                (Some(sealed), Some(key)) => OpenedEvent::Retracted {
                    content: open(key, &event.stream, sealed),
                    system: payload.system,
                    reason: payload.reason,
                },
                (None, _) => OpenedEvent::Retracted {
                    system: payload.system,
                    reason: payload.reason,
                    content: None,
                },
            }
        }
        _ => OpenedEvent::Other,
    }
}
