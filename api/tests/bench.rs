//! `mdm bench store` runs end to end on both backends and reports every
//! figure with its baseline (tiny sizes: this checks the program, the
//! figures themselves come from a release build, see README).

use std::process::Command;

/// Runs `mdm bench <args> --dir DIR` and returns its stdout and JSON lines.
fn run_bench(args: &[&str], dir: &std::path::Path) -> (String, Vec<serde_json::Value>) {
    let url = std::env::var("MDM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    let out = Command::new(env!("CARGO_BIN_EXE_mdm"))
        .arg("bench")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("MDM_BENCH_DATABASE_URL", &url)
        .env("MDM_LOG", "warn")
        .output()
        .expect("mdm runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l}: {e}")))
        .collect();
    (stdout, lines)
}

#[test]
fn bench_store_reports_every_figure_against_its_baseline_on_both_backends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (stdout, lines) = run_bench(
        &["store", "--log-events", "3000", "--appends", "48", "--repeat", "1"],
        dir.path(),
    );
    for backend in ["sqlite", "postgres"] {
        for figure in [
            "append_1_writer",
            "append_8_writers",
            "append_batch_100",
            "read_all",
            "subscription_catch_up",
        ] {
            let line = lines
                .iter()
                .find(|l| l["backend"] == backend && l["figure"] == figure)
                .unwrap_or_else(|| panic!("{backend} {figure} missing from:\n{stdout}"));
            let median = line["median"].as_f64().expect("median");
            let baseline = line["baseline_median"].as_f64().expect("baseline");
            assert!(median > 0.0 && baseline > 0.0, "{line}");
            assert!(line["ratio"].as_f64().expect("ratio") > 0.0, "{line}");
        }
        let read = lines
            .iter()
            .find(|l| l["backend"] == backend && l["figure"] == "read_all")
            .expect("read_all");
        assert_eq!(read["events_per_run"], 3000, "the log was filled to --log-events");
    }
    // The bench cleans up after itself.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// `mdm bench ingest` at a tiny size: the data set is generated, imported,
/// compared with plain SQLite and the memory check runs (figures from a
/// release build: docs/bench/ingest.md).
#[test]
fn bench_ingest_reports_capture_speed_against_plain_sqlite_and_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sources.example.toml");
    let (stdout, lines) = run_bench(
        &["ingest", "--records", "2000", "--repeat", "1", "--sources", sources],
        dir.path(),
    );
    let summary = lines
        .iter()
        .find(|l| l["figure"] == "bulk_capture")
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    assert!(summary["records"].as_u64().expect("records") >= 2000, "{summary}");
    for key in ["median_records_per_s", "baseline_median_records_per_s", "ratio"] {
        assert!(summary[key].as_f64().expect(key) > 0.0, "{key}: {summary}");
    }
    let memory: Vec<_> = lines.iter().filter(|l| l["figure"] == "import_peak_memory").collect();
    assert_eq!(memory.len(), 2, "{stdout}");
    assert!(
        memory.iter().all(|l| l["peak_rss_mib"].as_u64().unwrap_or(0) > 0),
        "{stdout}"
    );
}

/// `mdm bench match` on generated multi-source data: household members and
/// Jr/Sr pairs sharing an address are counted when merged. Precision comes
/// first: no Jr/Sr pair may be merged, household false merges stay rare.
#[test]
fn bench_match_counts_household_and_suffix_false_merges_on_generated_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sources.example.toml");
    let (stdout, lines) = run_bench(&["match", "--people", "2000", "--sources", sources], dir.path());
    let generated = lines
        .iter()
        .find(|l| l["dataset"] == "generated")
        .unwrap_or_else(|| panic!("{stdout}"));
    let figure = |k: &str| generated[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {stdout}"));
    assert!(figure("records") > 3000.0, "{stdout}");
    assert_eq!(
        figure("suffix_false_merge_pairs"),
        0.0,
        "a Jr and a Sr were merged: {stdout}"
    );
    assert!(
        figure("household_false_merge_pairs") <= 0.01 * figure("predicted_pairs"),
        "household members merged: {stdout}"
    );
    assert!(figure("precision") >= 0.97, "{stdout}");
    assert!(figure("recall") >= 0.8, "{stdout}");
    assert!(figure("resolver_heap_bytes_per_record") > 0.0);
}

/// The FEBRL benchmark files, when this machine has them (they live beside
/// the repository, not in it): febrl1 at F1 of at least 0.99.
#[test]
fn bench_match_reaches_the_febrl1_bar() {
    let febrl = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/febrl");
    if !std::path::Path::new(febrl).join("febrl1.csv").exists() {
        eprintln!("skipped: no FEBRL files at {febrl}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/febrl.sources.toml");
    let (stdout, lines) = run_bench(
        &[
            "match",
            "--febrl",
            febrl,
            "--sets",
            "febrl1",
            "--febrl-sources",
            sources,
        ],
        dir.path(),
    );
    let f1 = lines
        .first()
        .and_then(|l| l["f1"].as_f64())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(f1 >= 0.99, "{stdout}");
}

#[test]
fn bench_projections_reports_rebuild_speed_against_plain_inserts_and_lag_on_both_backends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (stdout, lines) = run_bench(
        &[
            "projections",
            "--records",
            "1500",
            "--repeat",
            "1",
            "--lag-rate",
            "200",
            "--lag-seconds",
            "2",
            "--sources",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sources.example.toml"),
        ],
        dir.path(),
    );
    let log = lines.iter().find(|l| l["figure"] == "log").expect("log line");
    assert!(log["events"].as_u64() > Some(1500), "{stdout}");
    for backend in ["sqlite", "postgres"] {
        let base = lines
            .iter()
            .find(|l| l["figure"] == "plain_batched_inserts" && l["backend"] == backend)
            .unwrap_or_else(|| panic!("{backend} baseline in {stdout}"));
        assert!(base["rows_per_second"].as_f64() > Some(0.0));
        for projection in ["customers", "source_records", "decisions"] {
            let line = lines
                .iter()
                .find(|l| l["figure"] == "rebuild" && l["backend"] == backend && l["projection"] == projection)
                .unwrap_or_else(|| panic!("{backend} {projection} in {stdout}"));
            assert!(line["events_per_second"].as_f64() > Some(0.0));
            assert!(line["ratio_to_plain_inserts"].as_f64() > Some(0.0));
        }
    }
    let lag: Vec<_> = lines.iter().filter(|l| l["figure"] == "lag_under_ingest").collect();
    assert_eq!(lag.len(), 4, "{stdout}");
    assert!(lag
        .iter()
        .all(|l| l["events"].as_u64() > Some(0) && l["p99_ms"].as_f64() >= Some(0.0)));
}

#[test]
fn bench_api_loads_the_service_and_a_bare_handler_on_both_backends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (stdout, lines) = run_bench(
        &[
            "api",
            "--customers",
            "100",
            "--seconds",
            "1",
            "--repeat",
            "1",
            "--connections",
            "4",
            "--ingest-rate",
            "50",
            "--backends",
            "sqlite,postgres",
        ],
        dir.path(),
    );
    for backend in ["sqlite", "postgres"] {
        let get = |figure: &str| {
            lines
                .iter()
                .find(|l| l["figure"] == figure && l["backend"] == backend)
                .and_then(|l| l["median"].as_f64())
                .unwrap_or_else(|| panic!("{backend} {figure} in {stdout}"))
        };
        assert!(get("customer_by_token_rps") > 0.0, "{stdout}");
        assert!(get("baseline_primary_key_select_rps") > 0.0, "{stdout}");
        let ratio = get("customer_by_token_ratio_to_baseline");
        assert!(ratio > 0.0 && ratio < 10.0, "{stdout}");
        assert!(get("customer_by_token_half_load_p99") > 0.0, "{stdout}");
        assert!(get("single_record_ingest_p99") > 0.0, "{stdout}");
        let errors = lines
            .iter()
            .find(|l| l["figure"] == "single_record_ingest_p99" && l["backend"] == backend)
            .and_then(|l| l["errors"].as_u64());
        assert_eq!(errors, Some(0), "every single-record ingest answered: {stdout}");
    }
}

#[test]
fn bench_erasure_measures_erasures_against_overrides_until_every_read_model_purged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sources.example.toml");
    let (stdout, lines) = run_bench(
        &["erasure", "--records", "2000", "--erasures", "3", "--sources", sources],
        dir.path(),
    );
    let figure = |name: &str| {
        lines
            .iter()
            .find(|l| l["figure"] == name)
            .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"))
            .clone()
    };
    for name in [
        "override_to_read_models_ms",
        "erasure_to_read_models_ms",
        "erasure_command_ms",
    ] {
        let f = figure(name);
        assert_eq!(f["runs"], 3, "{f}");
        assert!(f["median"].as_f64().is_some_and(|m| m > 0.0), "{f}");
        assert!(f["p99"].as_f64() >= f["median"].as_f64(), "{f}");
    }
    let ratio = figure("ratio_erasure_to_override");
    assert!(ratio["value"].as_f64().is_some_and(|r| r > 0.0), "{ratio}");
    assert!(
        ratio["records_erased_per_customer"].as_f64().is_some_and(|r| r >= 1.0),
        "{ratio}"
    );
}
