"""Evaluation: the FID/sFID InceptionV3 (`inception`) and its weights (`inception_weights`:
torch-free checkpoint reader, converter, download-and-cache), the metrics (`metrics`: Frechet
distance, precision/recall, reference statistics) and the evaluators used by the trainer and
`launch/evaluate.py` (`evaluators`)."""

from dctjax.eval.evaluators import FidEvaluator, reference_from_source
from dctjax.eval.inception import (
    FEATURE_DIMS,
    InceptionFeatures,
    inception_apply,
    inception_network,
    load_inception,
    preprocess,
    random_params,
)
from dctjax.eval.inception_weights import (
    FID_WEIGHTS_URL,
    WeightsHashError,
    WeightsUnavailableError,
    convert_state_dict,
    load_params,
    read_torch_checkpoint,
    resolve_weights,
    save_params,
)
from dctjax.eval.metrics import (
    FeatureStats,
    FIDReference,
    frechet_distance,
    load_reference,
    precision_recall,
    save_reference,
)

__all__ = [
    "FeatureStats",
    "FidEvaluator",
    "FIDReference",
    "frechet_distance",
    "load_reference",
    "precision_recall",
    "reference_from_source",
    "save_reference",
    "FEATURE_DIMS",
    "FID_WEIGHTS_URL",
    "InceptionFeatures",
    "WeightsHashError",
    "WeightsUnavailableError",
    "convert_state_dict",
    "inception_apply",
    "inception_network",
    "load_inception",
    "load_params",
    "preprocess",
    "random_params",
    "read_torch_checkpoint",
    "resolve_weights",
    "save_params",
]
