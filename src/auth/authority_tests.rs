//! The credentials and policies files, and their reload.

use std::path::Path;

use super::*;
use crate::auth::policy::Context;

const CREDENTIALS: &str = r#"
principals:
  - name: inventory-manager
    accessKeys:
      - accessKeyId: AKIAINVENTORY00001
        secretAccessKey: inventory-secret-0001
    policies: [inventory-register]
  - name: reader
    accessKeys:
      - accessKeyId: AKIAREADER00000001
        secretAccessKey: reader-secret-00001
    inlinePolicies:
      - Version: "2012-10-17"
        Statement:
          Effect: Allow
          Action: servicediscovery:DiscoverInstances
          Resource: "*"
"#;

const POLICIES: &str = r#"
policies:
  inventory-register:
    Version: "2012-10-17"
    Statement:
      - Effect: Allow
        Action: servicediscovery:RegisterInstance
        Resource: "arn:aws:servicediscovery:*:*:service/srv-inventory"
"#;

fn allowed(config: &AuthConfig, key: &str, action: &str, resource: &str) -> bool {
    let ctx = Context::new();
    config.principal(key).unwrap().decide(&Request {
        action,
        resources: &[resource.to_string()],
        context: &ctx,
    }) == Decision::Allow
}

#[test]
fn principals_keys_and_policies() {
    let c = AuthConfig::parse(
        (Path::new("creds.yaml"), CREDENTIALS),
        Some((Path::new("policies.yaml"), POLICIES)),
    )
    .unwrap();
    assert_eq!(c.key_count(), 2);
    assert_eq!(
        c.secret("AKIAINVENTORY00001").as_deref(),
        Some("inventory-secret-0001")
    );
    assert_eq!(c.secret("AKIAUNKNOWN0000001"), None);
    assert_eq!(c.principal("AKIAREADER00000001").unwrap().name, "reader");
    let svc = "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-inventory";
    assert!(allowed(
        &c,
        "AKIAINVENTORY00001",
        "servicediscovery:RegisterInstance",
        svc
    ));
    assert!(!allowed(
        &c,
        "AKIAINVENTORY00001",
        "servicediscovery:DiscoverInstances",
        "*"
    ));
    assert!(allowed(
        &c,
        "AKIAREADER00000001",
        "servicediscovery:DiscoverInstances",
        "*"
    ));
    assert!(!allowed(
        &c,
        "AKIAREADER00000001",
        "servicediscovery:RegisterInstance",
        svc
    ));
}

#[test]
fn bad_files_are_refused_with_what_is_wrong() {
    let parse = |creds: &str, pols: Option<&str>| {
        AuthConfig::parse(
            (Path::new("creds.yaml"), creds),
            pols.map(|p| (Path::new("policies.yaml"), p)),
        )
        .unwrap_err()
        .to_string()
    };
    let one = |body: &str| format!("principals:\n  - name: p\n{body}");
    for (creds, pols, want) in [
        ("principals: [", None, "creds.yaml"),
        ("users: []", None, "unknown field `users`"),
        (
            &one(
                "    accessKeys:\n      - {accessKeyId: short, secretAccessKey: long-enough-secret}\n",
            ),
            None,
            "16 or more letters and digits",
        ),
        (
            &one(
                "    accessKeys:\n      - {accessKeyId: AKIAPPPPPPPPPPPP1, secretAccessKey: short}\n",
            ),
            None,
            "shorter than 16",
        ),
        (
            &one(
                "    accessKeys:\n      - {accessKeyId: AKIAPPPPPPPPPPPP1, secretAccessKey: long-enough-secret}\n      - {accessKeyId: AKIAPPPPPPPPPPPP1, secretAccessKey: long-enough-secret}\n",
            ),
            None,
            "listed twice",
        ),
        (
            &one(
                "    accessKeys:\n      - {accessKeyId: AKIAPPPPPPPPPPPP1, secretAccessKey: long-enough-secret}\n    policies: [missing]\n",
            ),
            None,
            "unknown policy \"missing\"",
        ),
        (
            &one(
                "    accessKeys:\n      - {accessKeyId: AKIAPPPPPPPPPPPP1, secretAccessKey: long-enough-secret}\n    policies: [bad]\n",
            ),
            Some(
                "policies:\n  bad: {Version: '2012-10-17', Statement: {Effect: Allow, Action: '*'}}\n",
            ),
            "policies.yaml: policy \"bad\": Statement[0]: Resource",
        ),
        (
            "principals: []\npolicies:\n  dup: {}\n",
            Some("policies:\n  dup: {}\n"),
            "also defined in creds.yaml",
        ),
    ] {
        let err = parse(creds, pols);
        assert!(err.contains(want), "{creds}: {err:?} should say {want:?}");
    }
}

#[test]
fn a_reload_takes_a_valid_change_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.yaml");
    let pols = dir.path().join("policies.yaml");
    std::fs::write(&creds, CREDENTIALS).unwrap();
    std::fs::write(&pols, POLICIES).unwrap();
    let auth = Authority::load(&creds, Some(&pols)).unwrap();
    assert!(!auth.reload().unwrap(), "unchanged");
    let svc = "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-orders";
    assert!(!allowed(
        &auth.current(),
        "AKIAINVENTORY00001",
        "servicediscovery:RegisterInstance",
        svc
    ));
    std::fs::write(&pols, POLICIES.replace("srv-inventory", "*")).unwrap();
    assert!(auth.reload().unwrap());
    assert!(allowed(
        &auth.current(),
        "AKIAINVENTORY00001",
        "servicediscovery:RegisterInstance",
        svc
    ));
    // Broken: refused, and the previous version stays.
    std::fs::write(&pols, "policies: {x: {Version: nope}}").unwrap();
    assert!(auth.reload().is_err());
    assert!(allowed(
        &auth.current(),
        "AKIAINVENTORY00001",
        "servicediscovery:RegisterInstance",
        svc
    ));
    std::fs::remove_file(&creds).unwrap();
    assert!(
        auth.reload()
            .unwrap_err()
            .to_string()
            .contains("cannot read")
    );
    assert_eq!(auth.current().key_count(), 2);
}
