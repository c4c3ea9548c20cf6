"""The data a model trains on: CSV files and seeded synthetic sets as Lightning DataModules."""

from backprop_lab.data.modules import (
    CSVDataModule,
    DataError,
    SyntheticDataModule,
    TensorBatches,
    TensorDataModule,
    read_csv,
    take_rows,
)

__all__ = [
    "CSVDataModule",
    "DataError",
    "SyntheticDataModule",
    "TensorBatches",
    "TensorDataModule",
    "read_csv",
    "take_rows",
]
