//! Every acknowledged write survives SIGKILL: a child process registers
//! instances through the redb-backed registry and reports each acknowledged
//! write; the parent kills it mid-stream, reopens the data directory and
//! checks that everything acknowledged is there and the revision is intact.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use waymark::registry::model::{NamespaceType, Owner, TargetType};
use waymark::registry::{
    CreateNamespace, CreateService, RedbStore, RegisterInstance, Registry, RegistryConfig,
};

const CHILD_ENV: &str = "WAYMARK_DURABILITY_CHILD_DIR";

/// The writer half: only does something when re-executed by the parent.
#[test]
#[ignore = "child process of acknowledged_writes_survive_sigkill"]
fn durability_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = RedbStore::open(dir.as_ref()).expect("open store");
    let reg = Registry::open(Box::new(store), RegistryConfig::default()).expect("open registry");
    let op = reg
        .create_namespace(CreateNamespace {
            name: "durable".into(),
            kind: NamespaceType::Http,
            description: None,
            soa_ttl: None,
            vpc: None,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .expect("namespace");
    let svc = reg
        .create_service(CreateService {
            name: "writer".into(),
            namespace_id: op.targets[&TargetType::Namespace].clone(),
            description: None,
            dns_config: None,
            health_check_config: None,
            health_check_custom_config: None,
            http_only: false,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .expect("service");
    let mut out = std::io::stdout().lock();
    writeln!(out, "SERVICE {}", svc.id).unwrap();
    out.flush().unwrap();
    // Write until killed; the parent decides when.
    for i in 0.. {
        let id = format!("i-{i:06}");
        let outcome = reg
            .register_instance(RegisterInstance {
                service_id: svc.id.clone(),
                instance_id: id.clone(),
                attributes: [("seq".to_string(), i.to_string())].into(),
                creator_request_id: None,
                owner: Owner::Api,
            })
            .expect("register");
        let op = outcome.operation.expect("API writes record an operation");
        // Only now is the write acknowledged.
        writeln!(out, "ACK {id} {}", op.id).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "durability_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut service_id = None;
    let mut acked: Vec<(String, String)> = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest may prefix the first line with "test <name> ... ".
        let start = ["SERVICE ", "ACK "]
            .iter()
            .filter_map(|m| line.find(m))
            .min()
            .unwrap_or(0);
        let mut parts = line[start..].split_whitespace();
        match parts.next() {
            Some("SERVICE") => service_id = parts.next().map(str::to_string),
            Some("ACK") => {
                acked.push((parts.next().unwrap().into(), parts.next().unwrap().into()));
                if acked.len() == 150 {
                    // Kill mid-stream: the child is inside its next write.
                    Command::new("kill")
                        .args(["-KILL", &child.id().to_string()])
                        .status()
                        .unwrap();
                    break;
                }
            }
            _ => {}
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must have been killed");
    let service_id = service_id.expect("child reported its service");

    let store = RedbStore::open(&data).expect("reopen after SIGKILL");
    let reg = Registry::open(Box::new(store), RegistryConfig::default()).unwrap();
    let index = reg.read();
    let entry = index.service(&service_id).expect("service survived");
    for (id, op) in &acked {
        let inst = entry
            .instances
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged instance {id} lost"));
        let seq: u64 = id["i-".len()..].parse().unwrap();
        assert_eq!(inst.attributes["seq"], seq.to_string());
        assert!(index.operation(op).is_some(), "operation {op} of {id} lost");
    }
    // The child may have completed a few more writes (their ACK lines still
    // in the pipe) before the signal landed. Writes are sequential and
    // atomic: what is present is exactly the first `present` writes, and the
    // revision counts exactly those.
    let present = entry.instances.len();
    assert!(present >= acked.len(), "{present} instances");
    for seq in 0..present {
        assert!(
            entry.instances.contains_key(&format!("i-{seq:06}")),
            "write {seq} missing while a later one survived"
        );
    }
    assert_eq!(entry.service.revision, present as u64);
}
