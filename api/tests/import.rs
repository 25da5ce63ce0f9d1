//! `mdm import` and `mdm datagen` as an operator runs them: the real binary,
//! real files, on the embedded store and on PostgreSQL.

mod common;

use std::path::Path;
use std::process::Command;

use common::{start, terminate, Backend, Deployment};
use serde_json::Value;

impl Deployment {
    /// Runs `mdm <args>`; returns (success, stdout JSON or Null, stderr).
    fn mdm(&self, args: &[&str]) -> (bool, Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_mdm"))
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .envs(self.env())
            .output()
            .expect("mdm runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json = stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        (
            out.status.success(),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn import(&self, system: &str, file: &Path, extra: &[&str]) -> Value {
        let file = file.to_str().expect("utf-8 path");
        let mut args = vec!["import", "--system", system, file];
        args.extend_from_slice(extra);
        let (ok, report, stderr) = self.mdm(&args);
        assert!(ok, "mdm import failed: {stderr}");
        report
    }

    fn write(&self, name: &str, text: &[u8]) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

const FINANCE_HEADER: &str = "ACCOUNT_ID,BORROWER_FIRST,BORROWER_MI,BORROWER_LAST,BORROWER_SFX,E.Mail,HOME_PHONE,\
                              WORK_PHONE,ADDR_LINE1,ADDR_LINE2,CITY,STATE,ZIP,COUNTRY,DOB,LOAN_TYPE";

fn finance_row(id: u32, given: &str) -> String {
    format!("FA-{id},{given},Q,Brightwater,,{given}@finance.test,555-010-{id:04},,12 Elm St,,Springfield,IL,62704,US,03.02.1980,auto")
}

fn finance_file(rows: &[String]) -> Vec<u8> {
    let mut text = format!("{FINANCE_HEADER}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text.into_bytes()
}

async fn a_csv_file_is_imported_once_and_a_full_snapshot_retracts_what_it_lacks(backend: Backend) {
    let d = Deployment::new(backend, "import");
    let rows: Vec<String> = (1..=5).map(|i| finance_row(i, &format!("Person{i}"))).collect();
    let mut with_bad = rows.clone();
    with_bad.insert(2, "FA-99,Bad,,Date,,,,,,,,,,,31.31.1980,auto".to_owned());
    let file = d.write("finance.csv", &finance_file(&with_bad));

    let report = d.import("finance", &file, &[]);
    assert_eq!(report["tally"]["captured"], 5, "{report}");
    assert_eq!(report["tally"]["rejected"], 1, "{report}");
    let rejection = report["rejections"][0].as_str().expect("a rejection");
    assert!(rejection.starts_with("row 3: field `date_of_birth`"), "{rejection}");
    assert!(!rejection.contains("31.31.1980"), "{rejection}");

    // Re-running the same file stores nothing new.
    let report = d.import("finance", &file, &[]);
    assert_eq!(report["tally"]["unchanged"], 5, "{report}");
    assert_eq!(report["tally"]["captured"], 0, "{report}");

    // A full snapshot with a rejected row retracts nothing.
    let report = d.import("finance", &file, &["--full-snapshot"]);
    assert_eq!(report["retracted_missing"], 0, "{report}");
    assert!(report["snapshot_skipped"].is_string(), "{report}");

    // A clean full snapshot without FA-2 and with FA-3 changed: FA-2 retracted.
    let snapshot: Vec<String> = vec![
        rows[0].clone(),
        finance_row(3, "Renamed"),
        rows[3].clone(),
        rows[4].clone(),
    ];
    let file = d.write("snapshot.csv", &finance_file(&snapshot));
    let report = d.import("finance", &file, &["--full-snapshot"]);
    assert_eq!(report["tally"]["changed"], 1, "{report}");
    assert_eq!(report["tally"]["unchanged"], 3, "{report}");
    assert_eq!(report["retracted_missing"], 1, "{report}");
    // Again: FA-2 is retracted already, nothing more to do.
    let report = d.import("finance", &file, &["--full-snapshot"]);
    assert_eq!(report["retracted_missing"], 0, "{report}");
    // FA-2 comes back: captured again.
    let file = d.write("back.csv", &finance_file(&rows[1..2]));
    let report = d.import("finance", &file, &[]);
    assert_eq!(report["tally"]["captured"], 1, "{report}");

    // The service sees the same records: the HTTP endpoint and the CLI share
    // one pipeline and one key store.
    let env = d.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut child, addr) = start(d.dir.path(), &env);
    let response = common::api(&addr)
        .post(format!("http://{addr}/v1/sources/finance/records"))
        .header("content-type", "text/csv")
        .body(finance_file(&rows[3..4]))
        .send()
        .await
        .expect("answers");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["records"][0]["outcome"], "unchanged", "{body}");
    assert!(terminate(&mut child).success());
}

async fn json_ndjson_and_debezium_files_are_imported(backend: Backend) {
    let d = Deployment::new(backend, "import");
    let dealer = r#"[
      {"CustNo": "B-1", "CustName": "GROVES, MATTHEW J", "EMail": "mg@example.test", "CityStZip": "Springfield, IL 62704", "BirthDt": "19800203"},
      {"CustNo": "B-2", "CustName": "HALE, BO", "BirthDt": "1980/02/03"},
      {"CustNo": "B-3", "CustName": "HALE, ANNA", "BirthDt": "02/03/1981"}
    ]"#;
    let file = d.write("dealer_b.json", dealer.as_bytes());
    let report = d.import("dealer_b", &file, &[]);
    assert_eq!(report["tally"]["captured"], 2, "{report}");
    assert_eq!(report["tally"]["rejected"], 1, "{report}");
    assert!(report["rejections"][0]
        .as_str()
        .expect("text")
        .starts_with("record 2: field `date_of_birth`"));

    let web = "{\"signupId\": \"W-1\", \"firstName\": \"Ann\", \"email\": \"ann@example.test\"}\n\
               {\"signupId\": \"W-2\", \"firstName\": \"Bo\"}\n";
    let file = d.write("web.ndjson", web.as_bytes());
    let report = d.import("web_signup", &file, &[]);
    assert_eq!(report["tally"]["captured"], 2, "{report}");

    let cdc = "{\"payload\": {\"op\": \"c\", \"before\": null, \"after\": {\"id\": 1, \"first_name\": \"Cy\"}, \"source\": {}, \"ts_ms\": 1}}\n\
               {\"payload\": {\"op\": \"d\", \"before\": {\"id\": 1, \"first_name\": \"Cy\"}, \"after\": null, \"source\": {}, \"ts_ms\": 2}}\n";
    let file = d.write("shop.ndjson", cdc.as_bytes());
    let report = d.import("shop_cdc", &file, &[]);
    assert_eq!(report["tally"]["captured"], 1, "{report}");
    assert_eq!(report["tally"]["retracted"], 1, "{report}");

    let (ok, _, stderr) = d.mdm(&["import", "--system", "nobody", file.to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(stderr.contains("nobody"), "{stderr}");
}

/// The generator's files, all seven systems, import without a single
/// rejection, and a second import stores nothing.
async fn the_generated_data_set_imports_cleanly(backend: Backend) {
    let d = Deployment::new(backend, "import");
    let out = d.dir.path().join("demo");
    let (ok, summary, stderr) = d.mdm(&["datagen", "--out", out.to_str().expect("utf-8"), "--people", "300"]);
    assert!(ok, "{stderr}");
    let files = summary["files"].as_array().expect("files").clone();
    let mut imported = 0;
    for f in files.iter().filter(|f| f["system"].is_string()) {
        let system = f["system"].as_str().expect("system");
        let path = out.join(f["file"].as_str().expect("file"));
        let report = d.import(system, &path, &[]);
        assert_eq!(report["tally"]["rejected"], 0, "{system}: {report}");
        imported += report["tally"]["captured"].as_u64().expect("count");
        let again = d.import(system, &path, &[]);
        assert_eq!(
            again["tally"]["captured"].as_u64().unwrap_or(0) + again["tally"]["changed"].as_u64().unwrap_or(0),
            0,
            "{system}: {again}"
        );
    }
    assert!(imported >= 300, "{imported} records captured");
}

on_both_backends!(
    a_csv_file_is_imported_once_and_a_full_snapshot_retracts_what_it_lacks,
    json_ndjson_and_debezium_files_are_imported,
    the_generated_data_set_imports_cleanly,
);
