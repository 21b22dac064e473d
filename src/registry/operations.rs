//! Operation records: what `GetOperation` / `ListOperations` report for
//! asynchronous Cloud Map calls, kept up to a retention limit, and the
//! idempotent replay of a retried request.

use std::collections::BTreeMap;

use super::model::{Operation, OperationStatus, OperationType, TargetType};
use super::{Change, Index, Registry, ids, now_millis};

impl Registry {
    /// A successful operation record plus the retention deletions it causes.
    pub(super) fn record_operation(
        &self,
        index: &Index,
        changes: &mut Vec<Change>,
        kind: OperationType,
        targets: &[(TargetType, &str)],
        request_id: Option<&str>,
    ) -> Operation {
        let now = now_millis();
        let op = Operation {
            id: ids::operation_id(),
            kind,
            status: OperationStatus::Success,
            error_message: None,
            error_code: None,
            create_date: now,
            update_date: now,
            targets: targets
                .iter()
                .map(|(t, id)| (*t, id.to_string()))
                .collect::<BTreeMap<_, _>>(),
            request_id: request_id.map(str::to_string),
            sequence: index.next_operation_sequence(),
        };
        let excess = (index.operation_count() + 1).saturating_sub(self.config.operation_retention);
        for old in index.operations().take(excess) {
            changes.push(Change::DeleteOperation(old.id.clone()));
        }
        changes.push(Change::PutOperation(op.clone()));
        op
    }

    /// A previous operation for the same idempotency token and kind, if any.
    pub(super) fn replay(
        index: &Index,
        request_id: Option<&str>,
        kind: OperationType,
    ) -> Option<Operation> {
        let op = index.operation_for_request(request_id?)?;
        (op.kind == kind).then(|| op.clone())
    }
}
