//! Peak heap while the input readers stream large hostile inputs: long
//! lines, one giant line, an unclosed quote, deep nesting, huge Debezium
//! envelopes. The peak is the process's peak resident size (Linux VmHWM,
//! reset before each input through /proc/self/clear_refs; the workspace
//! forbids `unsafe`, so no counting allocator), above the resident size
//! before the input; the inputs are generated on the fly by a `Read`, so they never
//! sit in memory themselves. The peak must stay under a fixed bound and must
//! not grow with the input's size (the same shape at 1/8 of the size peaks
//! at about the same height).
//!
//! `MDM_HOSTILE_INPUT_MB` sets the size of the large inputs (64 MB by
//! default; 100 and more for a longer run).

use std::io::{BufReader, Read};
use std::time::Instant;

use mdm_commands::input::csv::{CsvOptions, CsvRecords};
use mdm_commands::input::debezium::DebeziumRecords;
use mdm_commands::input::json::JsonRecords;
use mdm_commands::input::{InputErrorKind, InputRecord, DEFAULT_MAX_RECORD_BYTES};

/// A field of /proc/self/status in bytes ("VmRSS", "VmHWM").
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<usize>().ok())
        .expect("the field is there")
        * 1024
}

/// Resets the peak resident size (VmHWM) to the current one (Linux 4.0+).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident size");
}

/// An input made on the fly: `head`, then `unit` until `size` bytes in all
/// (the last unit cut short), then `tail`.
struct Generated {
    parts: [Vec<u8>; 3],
    /// Bytes of the repeated unit still to give.
    body_left: usize,
    part: usize,
    offset: usize,
}

impl Generated {
    fn new(head: &[u8], unit: &[u8], size: usize, tail: &[u8]) -> Self {
        Generated {
            parts: [head.to_vec(), unit.to_vec(), tail.to_vec()],
            body_left: size.saturating_sub(head.len() + tail.len()),
            part: 0,
            offset: 0,
        }
    }
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(part) = self.parts.get(self.part) else {
                return Ok(0);
            };
            let mut available = &part[self.offset..];
            if self.part == 1 {
                available = &available[..available.len().min(self.body_left)];
            }
            if available.is_empty() {
                if self.part == 1 && self.body_left > 0 {
                    self.offset = 0; // the next unit
                    continue;
                }
                self.part += 1;
                self.offset = 0;
                continue;
            }
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            self.offset += n;
            if self.part == 1 {
                self.body_left -= n;
            }
            return Ok(n);
        }
    }
}

/// What a reader made of an input: records read, records rejected by kind.
#[derive(Debug, Default)]
struct Outcome {
    good: usize,
    too_large: usize,
    other_errors: usize,
    peak_bytes: usize,
}

/// Streams `input` through `reader` (built over a 64 KiB `BufReader`) and
/// measures the peak resident size above what was resident before.
fn measure<I: Iterator<Item = InputRecord>>(make: impl FnOnce(BufReader<Generated>) -> I, input: Generated) -> Outcome {
    reset_peak();
    let base = status_bytes("VmRSS");
    let mut outcome = Outcome::default();
    for record in make(BufReader::with_capacity(64 * 1024, input)) {
        match &record.item {
            Ok(_) => outcome.good += 1,
            Err(e) if e.kind == InputErrorKind::TooLarge => outcome.too_large += 1,
            Err(_) => outcome.other_errors += 1,
        }
    }
    outcome.peak_bytes = status_bytes("VmHWM").saturating_sub(base);
    outcome
}

const MIB: usize = 1 << 20;

/// The peak resident any reader may reach with the default 1 MiB record limit:
/// one record's bytes, its parsed value (a few times its size) and the
/// buffers. Independent of the input's size.
const BOUND: usize = 16 * MIB;

struct Case {
    name: &'static str,
    reader: &'static str,
    input: fn(usize) -> Generated,
    /// (good, too large) records expected at `size` bytes; `None` = not
    /// checked (depends on where the last unit is cut).
    expect: fn(usize) -> (Option<usize>, Option<usize>),
}

fn long_csv_line() -> Vec<u8> {
    let field = "x".repeat(100 * 1024);
    format!("\"{field}\",\"a, \"\"b\"\"\",{field}\n").into_bytes()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "CSV, 200 KB lines",
            reader: "csv",
            input: |size| Generated::new(b"a,b,c\n", &long_csv_line(), size, b""),
            expect: |_| (None, Some(0)),
        },
        Case {
            name: "CSV, one quote never closed",
            reader: "csv",
            input: |size| Generated::new(b"a,b,c\n1,2,\"", b"xxxxxxx\n,yyyy\r\n", size, b""),
            expect: |_| (Some(0), Some(1)),
        },
        Case {
            name: "CSV, one giant line",
            reader: "csv",
            input: |size| Generated::new(b"a,b,c\n", b"xxxx,", size, b"\n1,2,3\n"),
            expect: |_| (Some(1), Some(1)),
        },
        Case {
            name: "CSV, a giant header",
            reader: "csv",
            input: |size| Generated::new(b"", b"col,", size, b"x\n1\n"),
            expect: |_| (Some(0), Some(1)),
        },
        Case {
            name: "NDJSON, 500 KB lines",
            reader: "json",
            input: |size| {
                let line = format!("{{\"name\": \"{}\", \"n\": [1, 2, 3]}}\n", "y".repeat(500 * 1024));
                Generated::new(b"{\"first\": 1}\n", line.as_bytes(), size, b"")
            },
            expect: |_| (None, Some(0)),
        },
        Case {
            name: "NDJSON, one giant line",
            reader: "json",
            input: |size| {
                Generated::new(
                    b"{\"first\": 1}\n{\"name\": \"",
                    b"zzzzzzzz",
                    size,
                    b"\"}\n{\"last\": 1}\n",
                )
            },
            expect: |_| (Some(2), Some(1)),
        },
        Case {
            name: "JSON, nesting as deep as the input",
            reader: "json",
            input: |size| Generated::new(b"", b"[", size, b""),
            expect: |_| (Some(0), Some(1)),
        },
        Case {
            name: "JSON array of 300 KB objects, small values",
            reader: "json",
            input: |size| {
                let element = format!("{{\"v\": [{}0]}},", "0,".repeat(150 * 1024));
                Generated::new(b"[", element.as_bytes(), size, b"{}]")
            },
            expect: |_| (None, Some(0)),
        },
        Case {
            name: "Debezium, 900 KB schema wrappers",
            reader: "debezium",
            input: |size| {
                let schema = format!(
                    "[{}1]",
                    "{\"type\": \"string\", \"field\": \"x\"},".repeat(900 * 1024 / 34)
                );
                let event = format!(
                    "{{\"schema\": {{\"fields\": {schema}}}, \"payload\": {{\"op\": \"c\", \"after\": {{\"id\": 1}}, \"ts_ms\": 1}}}}\n"
                );
                Generated::new(b"", event.as_bytes(), size, b"")
            },
            expect: |_| (None, Some(0)),
        },
        Case {
            name: "Debezium, one giant envelope",
            reader: "debezium",
            input: |size| {
                Generated::new(
                    b"{\"op\": \"c\", \"after\": {\"id\": 1}}\n{\"op\": \"c\", \"after\": {\"n\": [",
                    b"1,",
                    size,
                    b"1]}}\n",
                )
            },
            expect: |_| (Some(1), Some(1)),
        },
    ]
}

fn run(case: &Case, size: usize) -> Outcome {
    let input = (case.input)(size);
    match case.reader {
        "csv" => measure(|r| CsvRecords::new(r, CsvOptions::default()), input),
        "json" => measure(|r| JsonRecords::new(r, DEFAULT_MAX_RECORD_BYTES), input),
        _ => measure(|r| DebeziumRecords::new(r, DEFAULT_MAX_RECORD_BYTES), input),
    }
}

#[test]
fn peak_heap_is_bounded_and_independent_of_the_input_size() {
    let large_mb: usize = std::env::var("MDM_HOSTILE_INPUT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let (large, small) = (large_mb * 1_000_000, large_mb * 1_000_000 / 8);
    let started = Instant::now();
    let mut highest = 0;
    for case in cases() {
        let case_started = Instant::now();
        let big = run(&case, large);
        let little = run(&case, small);
        let (good, too_large) = (case.expect)(large);
        eprintln!(
            "{:<45} {:>4} MB: peak resident {:>6.2} MiB ({:>5.2} MiB at {} MB); {} read, {} too large, {} other errors; {:.1} s",
            case.name,
            large_mb,
            big.peak_bytes as f64 / MIB as f64,
            little.peak_bytes as f64 / MIB as f64,
            small / 1_000_000,
            big.good,
            big.too_large,
            big.other_errors,
            case_started.elapsed().as_secs_f64(),
        );
        if let Some(good) = good {
            assert_eq!(big.good, good, "{}: records read", case.name);
        }
        if let Some(too_large) = too_large {
            assert_eq!(big.too_large, too_large, "{}: records too large", case.name);
        }
        assert!(
            big.peak_bytes <= BOUND,
            "{}: peak resident {} bytes is above the bound of {BOUND}",
            case.name,
            big.peak_bytes
        );
        // Independent of size: eight times the input (56 MB more at the
        // default size), at most 8 MiB more resident (the resident size
        // moves in pages and allocator arenas, not bytes).
        assert!(
            big.peak_bytes <= little.peak_bytes + 8 * MIB,
            "{}: peak resident grew with the input: {} bytes at {} MB, {} at {} MB",
            case.name,
            little.peak_bytes,
            small / 1_000_000,
            big.peak_bytes,
            large_mb
        );
        highest = highest.max(big.peak_bytes);
    }
    eprintln!(
        "highest peak resident: {:.2} MiB (bound {} MiB); {:.1} s in all",
        highest as f64 / MIB as f64,
        BOUND / MIB,
        started.elapsed().as_secs_f64()
    );
}
