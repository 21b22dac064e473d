//! Moving a registry between stores (`waymark store copy`): every record as
//! it is — ids, revisions, operation records and their order, tags,
//! ownership — from one store into another, in commits the target takes.

use super::{Change, Commit, Snapshot, Store, StoreError, StoreResult};

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Namespaces copied.
    pub namespaces: usize,
    /// Services copied.
    pub services: usize,
    /// Instances copied.
    pub instances: usize,
    /// Operation records copied.
    pub operations: usize,
    /// Records removed from the target first (with `replace`).
    pub removed: usize,
}

impl CopyReport {
    /// Records written in all.
    pub fn records(&self) -> usize {
        self.namespaces + self.services + self.instances + self.operations
    }
}

/// How many records a snapshot holds.
fn size(s: &Snapshot) -> usize {
    s.namespaces.len() + s.services.len() + s.instances.len() + s.operations.len()
}

/// The changes that empty a store holding `s`: children before parents.
fn removals(s: &Snapshot) -> Vec<Change> {
    let mut out = Vec::with_capacity(size(s));
    out.extend(
        s.operations
            .iter()
            .map(|o| Change::DeleteOperation(o.id.clone())),
    );
    out.extend(s.instances.iter().map(|i| Change::DeleteInstance {
        service_id: i.service_id.to_string(),
        instance_id: i.id.clone(),
    }));
    out.extend(
        s.services
            .iter()
            .map(|s| Change::DeleteService(s.id.clone())),
    );
    out.extend(
        s.namespaces
            .iter()
            .map(|n| Change::DeleteNamespace(n.id.clone())),
    );
    out
}

/// The changes that fill an empty store with `s`: parents before children.
fn puts(s: Snapshot) -> Vec<Change> {
    let mut out = Vec::with_capacity(size(&s));
    out.extend(s.namespaces.into_iter().map(Change::PutNamespace));
    out.extend(s.services.into_iter().map(Change::PutService));
    out.extend(s.instances.into_iter().map(Change::PutInstance));
    out.extend(s.operations.into_iter().map(Change::PutOperation));
    out
}

/// Copies everything `from` holds into `to`. A target that holds anything
/// is refused, unless `replace`: then its records are removed first. Nothing
/// else may write to the target meanwhile (a shared store refuses the copy's
/// commits if something does). `progress` hears (records written, total)
/// after each commit.
pub fn copy(
    from: &dyn Store,
    to: &dyn Store,
    replace: bool,
    mut progress: impl FnMut(usize, usize),
) -> StoreResult<CopyReport> {
    let source = from.load()?;
    let target = to.load()?;
    let held = size(&target);
    if held > 0 && !replace {
        return Err(StoreError::Refused(format!(
            "the target {} is not empty ({} namespaces, {} services, {} instances, {} operation \
             records); nothing was copied. Pass --replace to remove them first",
            to.describe(),
            target.namespaces.len(),
            target.services.len(),
            target.instances.len(),
            target.operations.len()
        )));
    }
    let report = CopyReport {
        namespaces: source.namespaces.len(),
        services: source.services.len(),
        instances: source.instances.len(),
        operations: source.operations.len(),
        removed: held,
    };
    let chunk = to.max_changes().unwrap_or(usize::MAX).max(1);
    let total = held + size(&source);
    let mut done = 0;
    for (changes, existed) in [(removals(&target), true), (puts(source), false)] {
        for part in changes.chunks(chunk) {
            to.commit(Commit {
                changes: part,
                existed: &vec![existed; part.len()],
                // Records are copied as they are, revisions included.
                bumps: &[],
            })?;
            done += part.len();
            progress(done, total);
        }
    }
    if total == 0 {
        progress(0, 0);
    }
    Ok(report)
}
