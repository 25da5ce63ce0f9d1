//! Catch-up-then-live subscriptions for the SQL adapters.
//!
//! A subscription here never "hands over" from a catch-up reader to a live
//! push channel, which is where gaps and duplicates usually come from. It
//! only ever does one thing: read the next page of the global log strictly
//! after the last position it delivered. When a page comes back empty it has
//! caught up, and it sleeps until a local append wakes it or the poll
//! interval (for appends made by other processes) passes. Because every
//! adapter guarantees that a page never skips an event that a later page
//! could return, this loop is gap-free and duplicate-free by construction.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::{EventStore, Position, ReadError, RecordedEvent};

/// How many events a subscription reads per query while catching up. Each
/// query has a cost beyond its rows, so catch-up speed grows with the page:
/// on PostgreSQL here 1,000 gave 0.42 of a plain streaming SELECT, 5,000
/// about 0.6, 10,000 about 0.7 and 20,000 about 0.78
/// (`mdm bench store --page-size`, docs/bench/store.md). A full page is
/// about 6 MB of 600-byte events, bounded by the channel below.
pub const SUBSCRIPTION_PAGE: usize = 10_000;

/// A running subscription to the global log. It yields events in log order;
/// after an error it yields nothing more (resubscribe from the last position
/// you processed). Dropping it stops the background reader.
#[derive(Debug)]
pub struct Subscription {
    events: mpsc::Receiver<Result<RecordedEvent, ReadError>>,
    reader: JoinHandle<()>,
}

impl Subscription {
    /// Wraps a channel fed by an adapter's own reader task.
    pub(crate) fn from_channel(
        events: mpsc::Receiver<Result<RecordedEvent, ReadError>>,
        reader: JoinHandle<()>,
    ) -> Subscription {
        Subscription { events, reader }
    }

    /// The next event, or `None` after the reader stopped.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, ReadError>> {
        self.events.recv().await
    }
}

impl Stream for Subscription {
    type Item = Result<RecordedEvent, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Tells subscriptions of this process that something was appended. Each
/// adapter owns one and calls [`AppendSignal::notify`] after every commit.
#[derive(Debug, Clone)]
pub(crate) struct AppendSignal {
    tx: std::sync::Arc<watch::Sender<u64>>,
}

impl AppendSignal {
    pub(crate) fn new() -> AppendSignal {
        AppendSignal {
            tx: std::sync::Arc::new(watch::channel(0).0),
        }
    }

    pub(crate) fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Starts a polling subscription over `store.read_all`.
pub(crate) fn spawn_polling<S>(store: S, after: Position, signal: &AppendSignal, poll: Duration) -> Subscription
where
    S: EventStore + Clone,
{
    // One page in flight keeps the reader busy while the consumer works,
    // and bounds the memory a slow consumer can pin.
    let (tx, rx) = mpsc::channel(SUBSCRIPTION_PAGE);
    let mut woken = signal.watch();
    let reader = tokio::spawn(async move {
        let mut after = after;
        loop {
            // Mark the signal seen before reading, so an append that commits
            // while we read wakes the wait below instead of being missed.
            woken.borrow_and_update();
            let page = match store.read_all(after, SUBSCRIPTION_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if page.is_empty() {
                tokio::select! {
                    changed = woken.changed() => {
                        if changed.is_err() {
                            // No local signal any more (the reader holds a
                            // clone of the store, so this should not happen):
                            // fall back to polling rather than spinning.
                            tokio::time::sleep(poll).await;
                        }
                    }
                    _ = tokio::time::sleep(poll) => {}
                    _ = tx.closed() => return,
                }
                continue;
            }
            for event in page {
                after = event.position;
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Subscription::from_channel(rx, reader)
}
