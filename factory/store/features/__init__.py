"""Feature views over event tables: point-in-time joins offline, the same values online,
and the log of what serving looked up."""

from factory.store.features._log import REQUIRED, FeatureLog, SkewReport
from factory.store.features._log_writer import FeatureLogWriter, WriterStats
from factory.store.features._online import OnlineTable, materialize_table
from factory.store.features._views import FeatureStore, FeatureView, HistoricalFeatures, ViewVersion

__all__ = [
    "REQUIRED",
    "FeatureLog",
    "FeatureLogWriter",
    "FeatureStore",
    "FeatureView",
    "HistoricalFeatures",
    "OnlineTable",
    "SkewReport",
    "ViewVersion",
    "WriterStats",
    "materialize_table",
]
