"""Dataset versions: tables on Lance, named by the SHA-256 of their canonical content.

See ``_versions`` for how versions of one name share storage and ``factory.store._canonical``
for the canonical form that gives a version its digest.
"""

from factory.store.datasets._versions import (
    DatasetMeta,
    DatasetStore,
    DatasetVersion,
    check_dataset_name,
    read_table_file,
)

__all__ = ["DatasetMeta", "DatasetStore", "DatasetVersion", "check_dataset_name", "read_table_file"]
