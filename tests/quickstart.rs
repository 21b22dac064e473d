//! The README's quickstart, `scripts/quickstart.sh`, run as a newcomer runs it: it starts
//! its own control plane, applies crds/ and examples/quickship/, makes the Deployments' pods
//! Ready, runs Waymark and prints the seed's two answers — then leaves nothing behind.
//!
//! Only the Waymark binary is handed in (`WAYMARK_QUICKSTART_BIN`, this test build's), so the
//! script does not run a nested `cargo build` on the tree under test.

mod support;

use std::process::{Command, Stdio};

#[test]
fn quickstart_prints_the_user_auth_table_and_the_inventory_srv_records() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart.sh");
    let out = Command::new(&script)
        .env("WAYMARK_QUICKSTART_BIN", support::BIN)
        .env_remove("WAYMARK_QUICKSTART_KEEP")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let context = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");

    // The DiscoverInstances answer (AWS CLI JSON): the UserAuth table, prod only.
    let json_start = stdout
        .find("\n{")
        .unwrap_or_else(|| panic!("no JSON answer:\n{context}"));
    let json_end = stdout[json_start..]
        .find("\n}\n")
        .map(|i| json_start + i + 2)
        .unwrap_or_else(|| panic!("unterminated JSON answer:\n{context}"));
    let answer: serde_json::Value = serde_json::from_str(&stdout[json_start..json_end])
        .unwrap_or_else(|e| panic!("the answer is not JSON ({e}):\n{context}"));
    let instances = answer["Instances"].as_array().expect("Instances");
    assert_eq!(instances.len(), 1, "{context}");
    let table = &instances[0];
    assert_eq!(table["InstanceId"], "user-auth-prod-01");
    assert_eq!(table["NamespaceName"], "quickship.local");
    assert_eq!(table["ServiceName"], "user-auth-db");
    assert_eq!(table["Attributes"]["tablename"], "UserAuth");
    assert_eq!(table["Attributes"]["environment"], "prod");
    assert!(
        stdout.contains("$ aws servicediscovery discover-instances --namespace-name quickship.local --service-name user-auth-db --query-parameters environment=prod"),
        "{context}"
    );

    // dig: one SRV record per inventory-manager pod (port 8080), and their addresses.
    let record = |l: &str| -> Option<(String, String)> {
        // name ttl IN type data...
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 5 && f[2] == "IN").then(|| (f[0].to_owned(), f[3].to_owned()))
    };
    let srv: Vec<&str> = stdout
        .lines()
        .filter(|l| record(l) == Some(("inventory-manager.quickship.local.".into(), "SRV".into())))
        .collect();
    assert_eq!(srv.len(), 3, "three SRV records:\n{context}");
    for line in &srv {
        let target = line.split_whitespace().last().unwrap();
        assert!(
            line.contains("1 1 8080 inventory-manager-")
                && target.ends_with(".inventory-manager.quickship.local."),
            "{line}"
        );
        // Each SRV target has its address in the additional section.
        assert!(
            stdout
                .lines()
                .any(|l| record(l) == Some((target.to_owned(), "A".into()))),
            "no A record for {target}:\n{context}"
        );
    }
    for ip in ["10.0.1.5", "10.0.2.3", "10.0.3.7"] {
        assert!(stdout.contains(ip), "{ip} missing:\n{context}");
    }
    // kubectl shows the health on the ServiceDiscoveries.
    assert!(
        stdout.lines().any(|l| l.split_whitespace().take(5).eq([
            "inventory-manager",
            "quickship.local",
            "3",
            "3",
            "True"
        ])),
        "kubectl get servicediscoveries:\n{context}"
    );

    // It cleaned up: its temporary directory (control plane, data, logs) is gone, and so
    // are the processes that lived in it.
    let dir = stderr
        .lines()
        .find_map(|l| l.split_once("starting a local control plane in "))
        .map(|(_, d)| d.trim().trim_end_matches("/controlplane").to_owned())
        .unwrap_or_else(|| panic!("no control plane directory in the log:\n{context}"));
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
    assert!(stderr.contains("stopped everything"), "{context}");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.lines().any(|l| l.contains(&dir)),
        "processes of {dir} still run:\n{ps}"
    );
}
