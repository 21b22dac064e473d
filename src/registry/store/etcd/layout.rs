//! The registry's layout in etcd: one JSON record per key under the prefix,
//! the format marker, and reading everything back at one revision.

use std::path::PathBuf;

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp};
use tracing::warn;

use super::members::Members;
use crate::registry::store::{Change, Snapshot, StoreError, StoreResult};

/// The marker identifying a Waymark registry (the same as the embedded store's).
const FORMAT: &str = "waymark-registry";
/// The schema version of the records under the prefix.
const SCHEMA_VERSION: &str = "1";
/// Keys per page when reading the whole registry.
const PAGE: i64 = 500;

/// Keys of the records under the prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) prefix: String,
}

/// What a key under the prefix holds.
#[derive(Debug)]
pub(super) enum KeyKind<'k> {
    /// The format marker.
    Meta,
    /// The key that serialises creating and deleting namespaces and services.
    Structure,
    /// A namespace record.
    Namespace(&'k str),
    /// A service record.
    Service(&'k str),
    /// An instance record: service id, instance id.
    Instance(&'k str, &'k str),
    /// An operation record.
    Operation(&'k str),
    /// A service's instance-set revision key (`rev/<service id>`, see the
    /// store's module docs): its value is the revision's base, and etcd's
    /// `mod_revision` of it is added.
    Revision(&'k str),
    /// Something this build does not know.
    Unknown,
}

impl Keys {
    pub(super) fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }

    pub(super) fn structure(&self) -> String {
        format!("{}structure", self.prefix)
    }

    /// The instance-set revision key of a service.
    pub(super) fn revision(&self, service_id: &str) -> String {
        format!("{}rev/{service_id}", self.prefix)
    }

    /// The key a change writes.
    pub(super) fn of(&self, change: &Change) -> String {
        let p = &self.prefix;
        match change {
            Change::PutNamespace(n) => format!("{p}ns/{}", n.id),
            Change::DeleteNamespace(id) => format!("{p}ns/{id}"),
            Change::PutService(s) => format!("{p}svc/{}", s.id),
            Change::DeleteService(id) => format!("{p}svc/{id}"),
            Change::PutInstance(i) => format!("{p}inst/{}/{}", i.service_id, i.id),
            Change::DeleteInstance {
                service_id,
                instance_id,
            } => format!("{p}inst/{service_id}/{instance_id}"),
            Change::PutOperation(o) => format!("{p}op/{}", o.id),
            Change::DeleteOperation(id) => format!("{p}op/{id}"),
            Change::SetServiceRevision { service_id, .. } => format!("{p}rev/{service_id}"),
        }
    }

    pub(super) fn kind<'k>(&self, key: &'k str) -> KeyKind<'k> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return KeyKind::Unknown;
        };
        match rest {
            "meta" => return KeyKind::Meta,
            "structure" => return KeyKind::Structure,
            _ => {}
        }
        if let Some(id) = rest.strip_prefix("ns/") {
            return KeyKind::Namespace(id);
        }
        if let Some(id) = rest.strip_prefix("svc/") {
            return KeyKind::Service(id);
        }
        if let Some(id) = rest.strip_prefix("op/") {
            return KeyKind::Operation(id);
        }
        if let Some(id) = rest.strip_prefix("rev/") {
            return KeyKind::Revision(id);
        }
        // Service ids never hold a slash; instance ids may.
        if let Some((service, instance)) =
            rest.strip_prefix("inst/").and_then(|r| r.split_once('/'))
        {
            return KeyKind::Instance(service, instance);
        }
        KeyKind::Unknown
    }

    /// The end of the prefix range (etcd's `--prefix`).
    pub(super) fn range_end(&self) -> Vec<u8> {
        let mut end = self.prefix.as_bytes().to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return end;
            }
        }
        vec![0]
    }
}

/// The encoded value of a change: `None` for a delete.
pub(super) fn value_of(change: &Change) -> StoreResult<Option<Vec<u8>>> {
    let encoded = match change {
        Change::PutNamespace(n) => serde_json::to_vec(n),
        Change::PutService(s) => serde_json::to_vec(s),
        Change::PutInstance(i) => serde_json::to_vec(i),
        Change::PutOperation(o) => serde_json::to_vec(o),
        _ => return Ok(None),
    };
    encoded.map(Some).map_err(StoreError::Encode)
}

fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        table,
        key: key.to_string(),
        source,
    })
}

/// The change a watched event (or a listed key) stands for; `None` for the
/// store's own bookkeeping keys.
pub(super) fn change_of(
    keys: &Keys,
    key: &str,
    value: Option<&[u8]>,
) -> StoreResult<Option<Change>> {
    Ok(Some(match (keys.kind(key), value) {
        (KeyKind::Namespace(_), Some(v)) => Change::PutNamespace(decode("namespaces", key, v)?),
        (KeyKind::Namespace(id), None) => Change::DeleteNamespace(id.to_string()),
        (KeyKind::Service(_), Some(v)) => Change::PutService(decode("services", key, v)?),
        (KeyKind::Service(id), None) => Change::DeleteService(id.to_string()),
        (KeyKind::Instance(..), Some(v)) => Change::PutInstance(decode("instances", key, v)?),
        (KeyKind::Instance(service, instance), None) => Change::DeleteInstance {
            service_id: service.to_string(),
            instance_id: instance.to_string(),
        },
        (KeyKind::Operation(_), Some(v)) => Change::PutOperation(decode("operations", key, v)?),
        (KeyKind::Operation(id), None) => Change::DeleteOperation(id.to_string()),
        // Revisions are combined with their service records by the caller.
        (KeyKind::Meta | KeyKind::Structure | KeyKind::Revision(_), _) => return Ok(None),
        (KeyKind::Unknown, _) => {
            warn!(key, "ignoring an unknown key under the registry prefix");
            return Ok(None);
        }
    }))
}

/// Checks the format marker, or writes it on an empty prefix. A prefix
/// holding anything else is refused, and nothing is changed.
pub(super) async fn check_meta(members: &Members, keys: &Keys) -> StoreResult<()> {
    let meta_key = keys.meta();
    let want = serde_json::json!({"format": FORMAT, "schema": SCHEMA_VERSION}).to_string();
    let foreign = |reason: String| StoreError::Foreign {
        path: PathBuf::from(&keys.prefix),
        reason,
    };
    let got = members
        .read("reading the registry marker", |mut c| {
            let k = meta_key.clone();
            async move { c.get(k, None).await }
        })
        .await?;
    let Some(kv) = got.kvs().first() else {
        let any = members
            .read("reading the registry prefix", |mut c| {
                let (k, end) = (keys.prefix.clone(), keys.range_end());
                async move {
                    c.get(k, Some(GetOptions::new().with_range(end).with_count_only()))
                        .await
                }
            })
            .await?;
        if any.count() > 0 {
            return Err(foreign(format!(
                "{} keys under the prefix but no {meta_key}",
                any.count()
            )));
        }
        // Claimed only if still absent, so two first replicas agree.
        let txn = Txn::new()
            .when([Compare::create_revision(
                meta_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(meta_key.clone(), want, None)]);
        members
            .read("writing the registry marker", |mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await?;
        return Ok(());
    };
    let meta: serde_json::Value = serde_json::from_slice(kv.value())
        .map_err(|e| foreign(format!("its marker is not JSON: {e}")))?;
    if meta["format"] != FORMAT {
        return Err(foreign(format!(
            "the marker's format is {}, expected {FORMAT:?}",
            meta["format"]
        )));
    }
    if meta["schema"] != SCHEMA_VERSION {
        return Err(foreign(format!(
            "schema version {} is not supported by this build (expects {SCHEMA_VERSION})",
            meta["schema"]
        )));
    }
    Ok(())
}

/// Reads every key under the prefix at one revision, page by page; starts
/// over when a compaction overtakes the read.
pub(super) async fn read_all(members: &Members, keys: &Keys) -> StoreResult<(Vec<KeyValue>, i64)> {
    let end = keys.range_end();
    'attempt: for _ in 0..3 {
        let mut from = keys.prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut all = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let page = members
                .read("reading the registry", |mut c| {
                    let (k, o) = (from.clone(), options.clone());
                    async move { c.get(k, Some(o)).await }
                })
                .await;
            let mut page = match page {
                Ok(p) => p,
                Err(StoreError::Refused(m)) if m.contains("compacted") => continue 'attempt,
                Err(e) => return Err(e),
            };
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let more = page.more();
            let kvs = page.take_kvs();
            if let Some(last) = kvs.last() {
                from = last.key().to_vec();
                from.push(0);
            }
            all.extend(kvs);
            if !more {
                return Ok((all, revision));
            }
        }
    }
    Err(StoreError::Unavailable(
        "the registry kept being compacted while it was read".into(),
    ))
}

/// A service's `InstancesRevision` on etcd: the base its revision key holds
/// plus the etcd revision that last wrote the key. Every transaction that
/// changes the service's instance set writes the key, and etcd's revisions
/// grow with every transaction, so the sum grows strictly whichever replica
/// wrote (see the module docs).
pub(super) fn instances_revision(base: u64, mod_revision: i64) -> u64 {
    base.saturating_add(u64::try_from(mod_revision).unwrap_or(0))
}

/// The base a revision key holds (a decimal number).
pub(super) fn revision_base(key: &str, value: &[u8]) -> StoreResult<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::Refused(format!("revision key {key} does not hold a number")))
}

/// The services' revision keys in a listing: service id → (base, mod_revision).
pub(super) type Revisions = std::collections::HashMap<String, (u64, i64)>;

/// The snapshot the listed keys make up, and the services' revision keys.
pub(super) fn snapshot_of(
    keys: &Keys,
    kvs: &[KeyValue],
    revision: i64,
) -> StoreResult<(Snapshot, Revisions)> {
    let mut snap = Snapshot {
        revision,
        ..Snapshot::default()
    };
    let mut revisions = Revisions::new();
    for kv in kvs {
        let key = String::from_utf8_lossy(kv.key());
        if let KeyKind::Revision(id) = keys.kind(&key) {
            let base = revision_base(&key, kv.value())?;
            revisions.insert(id.to_string(), (base, kv.mod_revision()));
            continue;
        }
        match change_of(keys, &key, Some(kv.value()))? {
            Some(Change::PutNamespace(n)) => snap.namespaces.push(n),
            Some(Change::PutService(s)) => snap.services.push(s),
            Some(Change::PutInstance(i)) => snap.instances.push(i),
            Some(Change::PutOperation(o)) => snap.operations.push(o),
            _ => {}
        }
    }
    // A service without a revision key (none of its instances changed on
    // etcd yet, or copied in) has the revision its record holds.
    for service in &mut snap.services {
        if let Some(&(base, at)) = revisions.get(&service.id) {
            service.revision = instances_revision(base, at);
        }
    }
    Ok((snap, revisions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_every_record_and_nothing_else() {
        let keys = Keys {
            prefix: "/w/".into(),
        };
        assert_eq!(keys.range_end(), b"/w0");
        assert!(matches!(
            keys.kind("/w/inst/srv-a/pod/x:1"),
            KeyKind::Instance("srv-a", "pod/x:1")
        ));
        assert!(matches!(
            keys.kind("/w/ns/ns-1"),
            KeyKind::Namespace("ns-1")
        ));
        assert!(matches!(
            keys.kind("/w/svc/srv-1"),
            KeyKind::Service("srv-1")
        ));
        assert!(matches!(keys.kind("/w/op/o-1"), KeyKind::Operation("o-1")));
        assert!(matches!(keys.kind("/w/structure"), KeyKind::Structure));
        assert!(matches!(
            keys.kind("/w/rev/srv-1"),
            KeyKind::Revision("srv-1")
        ));
        assert_eq!(revision_base("/w/rev/srv-1", b"41").unwrap(), 41);
        assert!(revision_base("/w/rev/srv-1", b"x").is_err());
        assert_eq!(instances_revision(41, 1000), 1041);
        assert!(matches!(keys.kind("/w/inst/no-slash"), KeyKind::Unknown));
        assert!(matches!(keys.kind("/other/ns/x"), KeyKind::Unknown));
        assert!(matches!(
            change_of(&keys, "/w/inst/srv-a/i-1", None).unwrap(),
            Some(Change::DeleteInstance { service_id, instance_id })
                if service_id == "srv-a" && instance_id == "i-1"
        ));
        assert!(
            change_of(&keys, "/w/structure", Some(b""))
                .unwrap()
                .is_none()
        );
        let err = change_of(&keys, "/w/ns/ns-1", Some(b"{not json")).unwrap_err();
        assert!(err.to_string().contains("/w/ns/ns-1"), "{err}");
    }
}
