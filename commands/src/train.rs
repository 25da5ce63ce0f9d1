//! `mdm train`: estimating the matching parameters from the records in the
//! log, and reading the latest version of every source record (which the
//! match benchmark uses too).

use std::collections::HashMap;
use std::sync::Arc;

use mdm_domain::matching::em::{self, EmReport, TrainLimits};
use mdm_domain::matching::features::{FeatureSettings, MatchFeatures};
use mdm_domain::matching::model::MatchParameters;
use mdm_domain::source_record::{CAPTURED, CHANGED, RETRACTED};
use mdm_store::keys::KeyStore;
use mdm_store::{EventStore, Position};

use crate::opened::{OpenedEvent, SourceRecordOpener};
use crate::resolver::ResolverError;

/// The latest live version of one source record.
#[derive(Debug)]
pub struct LatestRecord {
    pub stream: String,
    pub system: String,
    pub source_id: String,
    pub features: MatchFeatures,
}

/// Reads the whole log and returns the latest live version of every source
/// record (retracted and erased ones left out), in order of first capture.
pub async fn latest_records(
    store: &Arc<dyn EventStore>,
    keys: Arc<dyn KeyStore>,
    settings: &FeatureSettings,
) -> Result<Vec<LatestRecord>, ResolverError> {
    let opener = SourceRecordOpener::new(keys, 200_000);
    let mut slots: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Option<LatestRecord>> = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 20_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        let sources: Vec<_> = page
            .into_iter()
            .filter(|e| matches!(e.event_type.as_str(), CAPTURED | CHANGED | RETRACTED))
            .collect();
        let opened = opener.open_all(&sources).await?;
        for (e, o) in sources.iter().zip(opened) {
            let latest = match o {
                OpenedEvent::Version { system, content, .. } => Some(LatestRecord {
                    stream: e.stream.clone(),
                    system,
                    source_id: content.source_id.clone(),
                    features: MatchFeatures::from_attributes(&content.attributes, settings),
                }),
                _ => None,
            };
            match slots.get(&e.stream) {
                Some(i) => out[*i] = latest,
                None => {
                    slots.insert(e.stream.clone(), out.len());
                    out.push(latest);
                }
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Estimates parameters from the latest version of every record.
pub fn train(records: &[LatestRecord], version: String, seed: u64, limits: TrainLimits) -> (MatchParameters, EmReport) {
    let features: Vec<MatchFeatures> = records.iter().map(|r| r.features.clone()).collect();
    em::train(&features, &MatchParameters::defaults(), version, seed, limits)
}
