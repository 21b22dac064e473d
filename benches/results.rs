//! Raw results of a bench run, for `scripts/plot-benches.sh`: one JSON file
//! per bench in `$WAYMARK_BENCH_RESULTS` (default `<target dir>/bench-results`),
//! rewritten by each run. The printed summary stays the bench's report; this
//! is what the plots are drawn from (every sample, not only percentiles).

use std::path::PathBuf;

use serde_json::{Value, json};

/// Where results go.
pub fn dir() -> PathBuf {
    match std::env::var_os("WAYMARK_BENCH_RESULTS") {
        Some(d) => PathBuf::from(d),
        // `target/tmp` is the benches' scratch directory; results go beside it.
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .map_or_else(
                || PathBuf::from("bench-results"),
                |t| t.join("bench-results"),
            ),
    }
}

/// Writes `<dir>/<bench>.json`: `data` with the bench's name, the date and
/// the machine.
pub fn write(bench: &str, data: Value) {
    let dir = dir();
    let machine = format!(
        "{} vCPU, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default()
    );
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%MZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let record = json!({"bench": bench, "date": date, "machine": machine, "data": data});
    let path = dir.join(format!("{bench}.json"));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&record).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) => println!("raw results: {}", path.display()),
        Err(e) => eprintln!("cannot write raw results to {}: {e}", path.display()),
    }
}
