//! What the backend test files share: reading a test server's env file and
//! a key prefix no other test uses.

use std::collections::HashMap;

/// `KEY=value` lines of `target/servers/<file>`, written by
/// `tests/servers/<script> start` (which `make test` runs). A missing file
/// fails the test: a test that cannot reach its server never passes.
pub fn server_env(file: &str, script: &str) -> HashMap<String, String> {
    let path = format!("{}/../target/servers/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{path}: {e}; start the test server first: tests/servers/{script} start (make test does)")
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A prefix unique to this test and run.
#[allow(dead_code)] // not every test file that includes this module needs it
pub fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("conformance/{test}-{}-{nanos}", std::process::id())
}
