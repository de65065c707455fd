"""The model artifact: the contract between the export stage and the service.

``models/<name>/<version>/`` holds model.onnx, metadata.json and optional files
(docs/artifact.md). ``artifact.metadata`` types metadata.json; ``artifact.files`` names the
files and reads, checks and writes them. Both stages import this package and nothing else
of each other; it needs neither torch nor onnxruntime.
"""

from artifact.files import (
    CHANNEL_VIEW_FILE,
    INITIAL_WEIGHTS_FILE,
    METADATA_FILE,
    MODEL_FILE,
    SAMPLES_FILE,
    ArtifactError,
    file_records,
    parse_metadata,
    read_metadata,
    sha256,
    verify_files,
    write_metadata,
)
from artifact.metadata import (
    SCHEMA_VERSION,
    ChannelViewRecord,
    ClassOutput,
    DerivedFrom,
    EpochRecord,
    ExplanationsRecord,
    FileRecord,
    InputRecipe,
    Layer,
    Layout,
    Metadata,
    MethodMeasurement,
    ModuleParams,
    OutputKind,
    Params,
    Parity,
    SamplesRecord,
    Source,
    Training,
    Versions,
)

__all__ = [
    "CHANNEL_VIEW_FILE",
    "INITIAL_WEIGHTS_FILE",
    "METADATA_FILE",
    "MODEL_FILE",
    "SAMPLES_FILE",
    "SCHEMA_VERSION",
    "ArtifactError",
    "ChannelViewRecord",
    "ClassOutput",
    "DerivedFrom",
    "EpochRecord",
    "ExplanationsRecord",
    "FileRecord",
    "InputRecipe",
    "Layer",
    "Layout",
    "Metadata",
    "MethodMeasurement",
    "ModuleParams",
    "OutputKind",
    "Params",
    "Parity",
    "SamplesRecord",
    "Source",
    "Training",
    "Versions",
    "file_records",
    "parse_metadata",
    "read_metadata",
    "sha256",
    "verify_files",
    "write_metadata",
]
