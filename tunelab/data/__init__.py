"""Data: catalog names, readers, splits, tokenisation and batching."""

from tunelab.data.batching import Encoded, collate, encode, plan_batches
from tunelab.data.catalog import CATALOG, data_dir
from tunelab.data.readers import Example
from tunelab.data.splits import Splits, load_splits

__all__ = ["CATALOG", "data_dir", "Example", "Splits", "load_splits", "Encoded", "encode",
           "collate", "plan_batches"]
