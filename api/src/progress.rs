//! Import progress: a bar with records/s and ETA on a terminal, plain log
//! lines every few seconds otherwise (CI logs, cron mails).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use mdm_commands::import::Progress;

/// How often plain progress lines are written.
const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct ImportProgress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    total_bytes: u64,
    last: Option<Progress>,
}

impl ImportProgress {
    /// Progress over a file of `total_bytes`.
    pub fn new(total_bytes: u64) -> ImportProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total_bytes);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} (ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        let now = Instant::now();
        ImportProgress {
            bar,
            started: now,
            last_line: now,
            total_bytes,
            last: None,
        }
    }

    pub fn update(&mut self, p: Progress) {
        self.last = Some(p);
        let records = p.tally.total();
        let rate = records as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        match &self.bar {
            Some(bar) => {
                bar.set_position(p.bytes_read.min(self.total_bytes));
                bar.set_message(format!(
                    "{records} records, {rate:.0} records/s, {} rejected",
                    p.tally.rejected
                ));
            }
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                let percent = 100.0 * p.bytes_read as f64 / self.total_bytes.max(1) as f64;
                tracing::info!(
                    records,
                    records_per_second = rate as u64,
                    rejected = p.tally.rejected,
                    percent = format!("{percent:.1}"),
                    "importing"
                );
            }
            None => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(p) = self.last {
            let seconds = self.started.elapsed().as_secs_f64();
            tracing::info!(
                records = p.tally.total(),
                captured = p.tally.captured,
                changed = p.tally.changed,
                unchanged = p.tally.unchanged,
                rejected = p.tally.rejected,
                records_per_second = (p.tally.total() as f64 / seconds.max(1e-3)) as u64,
                "import finished"
            );
        }
    }
}
