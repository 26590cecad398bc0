"""The handler of each statement kind."""

from __future__ import annotations

from typing import Any

from pglast import ast

from dashboard.schema.rules.statements import (
    _NO_TRANSACTION,
    _cluster,
    _create_trigger,
    _do,
    _insert,
    _lock,
    _refused_in_transaction,
    _reindex,
    _rename,
    _truncate,
    _unparsable,
    _update_delete,
    _vacuum,
)
from dashboard.schema.rules.tables import (
    _alter_table,
    _create_index,
    _create_table,
    _create_table_as,
    _drop,
)

__all__ = ["_HANDLERS", "_unparsable"]

_HANDLERS: dict[type, Any] = {
    ast.CreateStmt: _create_table,
    ast.CreateTableAsStmt: _create_table_as,
    ast.IndexStmt: _create_index,
    ast.DropStmt: _drop,
    ast.AlterTableStmt: _alter_table,
    ast.RenameStmt: _rename,
    ast.TruncateStmt: _truncate,
    ast.UpdateStmt: _update_delete,
    ast.DeleteStmt: _update_delete,
    ast.InsertStmt: _insert,
    ast.VacuumStmt: _vacuum,
    ast.ClusterStmt: _cluster,
    ast.ReindexStmt: _reindex,
    ast.LockStmt: _lock,
    ast.CreateTrigStmt: _create_trigger,
    ast.DoStmt: _do,
    ast.AlterEnumStmt: _refused_in_transaction,
    **dict.fromkeys(_NO_TRANSACTION, _refused_in_transaction),
}
