"""The portable model: a trained network's weights and preprocessing as plain arrays.

What batch inference and serving load, with NumPy alone (no torch, no Ludwig): training
exports it next to the Ludwig model of every registered version (``model/portable/``:
``portable.json`` with the preprocessing and layer layout, ``portable.npz`` with the
arrays) after checking that it predicts what ``LudwigModel.predict`` does. The format:

* inputs, in the config's order: numbers (training-set fill value, normalisation ``(x -
  shift) / scale`` in float32) and categories (vocabulary, fill value, fallback index,
  the embedding table or none for the passthrough encoder);
* the concat combiner's and the output feature's fully connected stacks (weight, bias,
  activation, residual), the regressor, the prediction's ``clip``;
* the output normalisation, undone in float64;
* the output's type: ``number`` (a regressor: the value), ``binary`` (a classifier: the
  sigmoid of the regressor's logit in float32, Ludwig's probability of ``True``, as
  float64) or ``category`` (a classifier of several classes: the softmax of the
  classifier's logits in float32, Ludwig's ``<target>_probabilities``, one row of class
  probabilities per input row in the order of the output's vocabulary, ``classes``); a
  binary export is format version 2, which readers of version 1 refuse, a category
  export version 3, which readers of versions 1 and 2 refuse (they would read its
  logits as one number).

The preprocessing classes here are shared with :mod:`mlops.contracts.predictor`, the
torch-based fast predictor training uses, so both read Ludwig's metadata one way.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported only where a column is a Series or a batch is large: serving starts,
# loads a model and answers single records without it (its import alone takes ~0.4 s).

PORTABLE_FOLDER = "portable"
SPEC_FILE = "portable.json"
ARRAYS_FILE = "portable.npz"
FORMAT = "mlops-portable"
FORMAT_VERSION = 1  # a regressor's export (readers of 1 know no other output)
BINARY_FORMAT_VERSION = 2  # a classifier's: version 1 plus the output type
CATEGORY_FORMAT_VERSION = 3  # a category output's: version 2 plus its classes
FORMAT_VERSIONS = frozenset({FORMAT_VERSION, BINARY_FORMAT_VERSION, CATEGORY_FORMAT_VERSION})
NUMBER_OUTPUT, BINARY_OUTPUT, CATEGORY_OUTPUT = "number", "binary", "category"
# Where a category output's classes are kept in the exported config's output feature.
CLASSES_KEY = "classes"
# Ludwig's default decision threshold of a binary output.
DEFAULT_THRESHOLD = 0.5
UNKNOWN_SYMBOL = "<UNK>"
# A list of this many rows or fewer is preprocessed in plain Python (no pandas objects).
_SMALL = 64


class UnsupportedModelError(ValueError):
    """The model uses something the fast path does not reproduce exactly."""


def output_type(config: Mapping[str, Any]) -> str:
    """``number`` (a regressor), ``binary`` or ``category`` (a classifier): the config's
    output type."""
    outputs = config.get("output_features") or [{}]
    return str(outputs[0].get("type", NUMBER_OUTPUT))


def output_classes(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """A category output's classes, in the order of its probabilities (its vocabulary,
    which the fast predictor writes into the config's output feature); else None."""
    outputs = config.get("output_features") or [{}]
    classes = outputs[0].get(CLASSES_KEY)
    return None if classes is None else tuple(str(c) for c in classes)


def class_threshold(config: Mapping[str, Any]) -> float:
    """The probability at or above which a binary output predicts ``True``."""
    outputs = config.get("output_features") or [{}]
    return float(outputs[0].get("threshold") or DEFAULT_THRESHOLD)


class Predictor(Protocol):
    """What serving and batch inference need of a model. ``predict_*`` give one float64
    per row: a regressor's predicted value, or a classifier's probability of ``True``; a
    category output's, one row of float64 class probabilities per input row (rows x
    classes, in the order of its ``classes``).
    """

    kind: str  # "fast" or "ludwig"
    config: dict[str, Any]
    target: str
    input_features: dict[str, str]  # name -> Ludwig type ("number", "category")

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray: ...

    def predict_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray: ...

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


# Preprocessing, read from Ludwig's training-set metadata.


@dataclass(frozen=True)
class Affine:
    """``(x - shift) / scale`` forward, ``x * scale + shift`` back; identity when None."""

    kind: str | None
    shift: float = 0.0
    scale: float = 1.0

    @classmethod
    def from_metadata(cls, kind: str | None, meta: Mapping[str, Any], name: str) -> Affine:
        if kind is None:
            return cls(None)
        if kind == "zscore":
            std = float(meta["std"])
            # Ludwig's ZScoreTransformer divides by 1 for a constant training column.
            return cls(kind, float(meta["mean"]), std if std != 0 else 1.0)
        if kind == "minmax":
            return cls(kind, float(meta["min"]), float(meta["max"]) - float(meta["min"]))
        if kind == "iq":
            return cls(kind, float(meta["q2"]), float(meta["q3"]) - float(meta["q1"]))
        if kind == "log1p":
            return cls(kind)
        raise UnsupportedModelError(f"normalization {kind!r} of {name!r} is not supported")

    def forward32(self, x: np.ndarray) -> np.ndarray:
        """Ludwig's ``transform`` on a float32 array (NumPy keeps float32 with float scalars)."""
        if self.kind is None:
            return x
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return (x - self.shift) / self.scale

    def inverse64(self, z: np.ndarray) -> np.ndarray:
        """Ludwig's ``inverse_transform`` of the float predictions, in float64."""
        z = z.astype(np.float64)
        if self.kind is None:
            return z
        with np.errstate(over="ignore", invalid="ignore"):
            if self.kind == "log1p":
                return np.expm1(z)
            return z * self.scale + self.shift


@dataclass(frozen=True)
class NumberInput:
    name: str
    fill: float | None
    norm: Affine

    def column(self, values: Any) -> np.ndarray:
        """Ludwig's number preprocessing: fill, cast to float32, normalise."""
        x = as_float64(values, self.fill)
        if self.fill is not None:
            nan = np.isnan(x)
            if nan.any():
                x = np.where(nan, self.fill, x)
        # Values beyond float32 become infinite, as in Ludwig's own cast; no warning.
        with np.errstate(over="ignore", invalid="ignore"):
            return self.norm.forward32(x.astype(np.float32))


@dataclass(frozen=True)
class CategoryInput:
    name: str
    fill: str
    str2idx: dict[str, int]
    idx2str: tuple[str, ...]
    fallback: int
    stripped_vocab: bool  # every vocabulary entry equals its own strip()
    table: np.ndarray | None  # embedding rows (float32), None for the passthrough encoder

    @property
    def width(self) -> int:
        return 1 if self.table is None else int(self.table.shape[1])

    @cached_property
    def vocab(self) -> pd.Index:
        """The vocabulary as a pandas index (large batches look values up in it)."""
        import pandas as pd

        return pd.Index(list(self.idx2str), dtype=object)

    def codes(self, values: Any) -> np.ndarray:
        """Ludwig's category preprocessing: fill, ``str``, ``strip``, look up or fall back."""
        if not _is_series(values) and len(values) <= _SMALL:
            get, fallback, fill = self.str2idx.get, self.fallback, self.fill
            out = []
            for value in values:
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    value = fill
                text = value if type(value) is str else str(value)
                index = get(text) if self.stripped_vocab else None
                if index is None:
                    index = get(text.strip(), fallback)
                out.append(index)
            return np.asarray(out, dtype=np.int64)
        import pandas as pd

        series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
        if series.dtype != object:
            series = series.astype(object)
        if series.isna().any():
            series = series.fillna(self.fill)
        series = series.astype(str)
        if self.stripped_vocab:
            # An exact hit is what strip() would have found; only misses are stripped.
            codes = self.vocab.get_indexer(series.to_numpy())
            missing = codes < 0
            if missing.any():
                codes[missing] = self.vocab.get_indexer(series[missing].str.strip().to_numpy())
        else:
            codes = self.vocab.get_indexer(series.str.strip().to_numpy())
        codes = codes.astype(np.int64, copy=False)
        codes[codes < 0] = self.fallback
        return codes

    def encode(self, values: Any) -> np.ndarray:
        codes = self.codes(values)
        if self.table is None:  # passthrough encoder: the index as a float
            return codes.astype(np.float32)[:, None]
        return self.table[codes]


def _is_series(values: Any) -> bool:
    """Whether ``values`` is a pandas Series (none can be while pandas is not imported)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(values, pandas.Series)


def as_float64(values: Any, fill: float | None) -> np.ndarray:
    if _is_series(values):
        import pandas as pd

        if values.dtype == object:
            if fill is not None:
                values = values.fillna(fill)
            values = pd.to_numeric(values, errors="coerce")
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64)
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        import pandas as pd

        series = pd.Series(list(values), dtype=object)
        if fill is not None:
            series = series.fillna(fill)
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


# The network in NumPy (float32, as Ludwig computes it).


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    """Each row's softmax in float32, as ``torch.softmax(x, -1)`` computes it."""
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = x - x.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


_erf = np.vectorize(math.erf, otypes=[np.float64])

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, np.float32(0)),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "leakyRelu": lambda x: np.where(x > 0, x, np.float32(0.01) * x),
    "gelu": lambda x: (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "relu6": lambda x: np.clip(x, np.float32(0), np.float32(6)),
    "selu": lambda x: (
        np.float32(1.0507009873554805)
        * np.where(x > 0, x, np.float32(1.6732632423543772) * np.expm1(x))
    ),
    "mish": lambda x: x * np.tanh(np.logaddexp(np.float32(0), x)),
    "logSigmoid": lambda x: -np.logaddexp(np.float32(0), -x),
    "hardswish": lambda x: x * np.clip(x + 3, 0, 6) / np.float32(6),
}


@dataclass(frozen=True)
class DenseLayer:
    """``activation(x @ weight.T + bias)``, plus ``x`` when residual."""

    weight: np.ndarray  # (out, in), float32
    bias: np.ndarray | None
    activation: str | None
    residual: bool = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # Infinite or NaN inputs give infinite or NaN outputs, as in torch: no warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            out = x @ self.weight.T
            if self.bias is not None:
                out += self.bias
            if self.activation is not None:
                out = ACTIVATIONS[self.activation](out).astype(np.float32, copy=False)
            return x + out if self.residual else out


@dataclass(frozen=True)
class Network:
    """Everything after preprocessing: combiner stack, output stack, regressor (a category
    output's classifier: one logit per class), clip, and for a binary output the sigmoid
    (Ludwig's probability of ``True``), for a category output the softmax (its class
    probabilities, rows x classes).
    """

    combiner: list[DenseLayer]
    output_fc: list[DenseLayer]
    decoder: DenseLayer
    clip: tuple[float, float] | None
    output_norm: Affine
    output: str = NUMBER_OUTPUT

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for layer in (*self.combiner, *self.output_fc, self.decoder):
            x = layer(x)
        if self.clip is not None:
            x = np.clip(x, np.float32(self.clip[0]), np.float32(self.clip[1]))
        if self.output == CATEGORY_OUTPUT:
            return softmax(x).astype(np.float64)
        if self.output == BINARY_OUTPUT:
            x = _sigmoid(x)
        return self.output_norm.inverse64(x.reshape(-1))


def preprocess(
    inputs: Sequence[NumberInput | CategoryInput],
    columns: Mapping[str, Sequence[Any] | np.ndarray],
    width: int,
) -> np.ndarray:
    """The combiner's input: each feature preprocessed and concatenated, float32."""
    rows = len(columns[inputs[0].name])
    hidden = np.empty((rows, width), dtype=np.float32)
    at = 0
    for spec in inputs:
        values = columns[spec.name]
        if len(values) != rows:
            raise ValueError(f"column {spec.name!r} has {len(values)} values, not {rows}")
        if isinstance(spec, NumberInput):
            hidden[:, at] = spec.column(values)
            at += 1
        else:
            block = spec.encode(values)
            hidden[:, at : at + block.shape[1]] = block
            at += block.shape[1]
    return hidden


def width_of(inputs: Sequence[NumberInput | CategoryInput]) -> int:
    return sum(1 if isinstance(s, NumberInput) else s.width for s in inputs)


# The portable predictor and its files.


class ColumnsPredictor:
    """Frames and records as columns, for a predictor that implements ``predict_columns``."""

    kind: str
    config: dict[str, Any]
    target: str
    input_features: dict[str, str]

    def describe(self) -> dict[str, Any]:
        return {"predictor": self.kind, "target": self.target, "inputs": self.input_features}

    @property
    def output_type(self) -> str:
        return output_type(self.config)

    @property
    def classes(self) -> tuple[str, ...] | None:
        """A category output's classes (the columns of its probabilities); else None."""
        return output_classes(self.config)

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's output for each row, as float64 (see :class:`Predictor`)."""
        missing = [name for name in self.input_features if name not in frame.columns]
        if missing:
            raise KeyError(f"missing input columns: {', '.join(missing)}")
        return self.predict_columns({name: frame[name] for name in self.input_features})

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.predict_columns(
            {name: [record.get(name) for record in records] for name in self.input_features}
        )

    def predict_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class PortablePredictor(ColumnsPredictor):
    """A registered model evaluated with NumPy alone. Thread-safe (no mutable state)."""

    kind = "portable"

    def __init__(
        self,
        config: dict[str, Any],
        inputs: list[NumberInput | CategoryInput],
        network: Network,
    ) -> None:
        self.config = config
        self.target: str = config["output_features"][0]["name"]
        self.input_features = {f["name"]: f["type"] for f in config["input_features"]}
        self.inputs = inputs
        self.network = network
        self.width = width_of(inputs)

    @classmethod
    def from_dir(cls, path: str | Path) -> PortablePredictor:
        """From a folder holding ``portable.json`` and ``portable.npz`` (or its parent)."""
        folder = portable_dir(path)
        spec = json.loads((folder / SPEC_FILE).read_text())
        if spec.get("format") != FORMAT or spec.get("version") not in FORMAT_VERSIONS:
            *others, last = (f"v{v}" for v in sorted(FORMAT_VERSIONS))
            known = f"{', '.join(others)} or {last}"
            raise UnsupportedModelError(f"{folder / SPEC_FILE} is not {FORMAT} {known}")
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return decode(spec, arrays)

    def predict_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        """Columns of raw values (lists, arrays or Series), one per input feature."""
        if len(columns[self.inputs[0].name]) == 0:
            return np.empty(0, dtype=np.float64)
        return self.network(preprocess(self.inputs, columns, self.width))


def portable_dir(path: str | Path) -> Path:
    """The folder with the portable files: ``path`` itself or its ``portable/``."""
    folder = Path(path)
    for candidate in (folder, folder / PORTABLE_FOLDER, folder / "model" / PORTABLE_FOLDER):
        if (candidate / SPEC_FILE).exists() and (candidate / ARRAYS_FILE).exists():
            return candidate
    raise FileNotFoundError(f"{path} holds no portable model ({SPEC_FILE}, {ARRAYS_FILE}).")


def has_portable(path: str | Path) -> bool:
    try:
        portable_dir(path)
    except FileNotFoundError:
        return False
    return True


def encode(
    config: dict[str, Any],
    inputs: Sequence[NumberInput | CategoryInput],
    network: Network,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON spec and the named arrays of a model (what :func:`decode` reads back)."""
    arrays: dict[str, np.ndarray] = {}

    def put(name: str, value: np.ndarray | None) -> str | None:
        if value is None:
            return None
        arrays[name] = np.ascontiguousarray(value, dtype=np.float32)
        return name

    def layers(prefix: str, stack: Sequence[DenseLayer]) -> list[dict[str, Any]]:
        return [
            {
                "weight": put(f"{prefix}.{i}.weight", layer.weight),
                "bias": put(f"{prefix}.{i}.bias", layer.bias),
                "activation": layer.activation,
                "residual": layer.residual,
            }
            for i, layer in enumerate(stack)
        ]

    versions = {BINARY_OUTPUT: BINARY_FORMAT_VERSION, CATEGORY_OUTPUT: CATEGORY_FORMAT_VERSION}
    spec = {
        "format": FORMAT,
        "version": versions.get(network.output, FORMAT_VERSION),
        "config": config,
        "inputs": [_encode_input(s, put) for s in inputs],
        "combiner": layers("combiner", network.combiner),
        "output_fc": layers("output_fc", network.output_fc),
        "decoder": layers("decoder", [network.decoder])[0],
        "clip": list(network.clip) if network.clip is not None else None,
        "output_norm": _encode_affine(network.output_norm),
        **({"output": network.output} if network.output in versions else {}),
    }
    return spec, arrays


def _encode_affine(norm: Affine) -> dict[str, Any]:
    return {"kind": norm.kind, "shift": norm.shift, "scale": norm.scale}


def _encode_input(
    spec: NumberInput | CategoryInput, put: Callable[[str, np.ndarray | None], str | None]
) -> dict[str, Any]:
    if isinstance(spec, NumberInput):
        return {
            "name": spec.name,
            "type": "number",
            "fill": spec.fill,
            "norm": _encode_affine(spec.norm),
        }
    return {
        "name": spec.name,
        "type": "category",
        "fill": spec.fill,
        "idx2str": [str(s) for s in spec.idx2str],
        "fallback": spec.fallback,
        "table": put(f"inputs.{spec.name}.table", spec.table),
    }


def decode(spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> PortablePredictor:
    def array(name: str | None) -> np.ndarray | None:
        return None if name is None else np.asarray(arrays[name], dtype=np.float32)

    def layer(item: Mapping[str, Any]) -> DenseLayer:
        weight = array(item["weight"])
        assert weight is not None
        return DenseLayer(weight, array(item["bias"]), item["activation"], bool(item["residual"]))

    def affine(item: Mapping[str, Any]) -> Affine:
        return Affine(item["kind"], float(item["shift"]), float(item["scale"]))

    inputs: list[NumberInput | CategoryInput] = []
    for item in spec["inputs"]:
        if item["type"] == "number":
            fill = item["fill"]
            inputs.append(
                NumberInput(
                    item["name"], None if fill is None else float(fill), affine(item["norm"])
                )
            )
        else:
            inputs.append(
                category_input(
                    item["name"],
                    item["fill"],
                    item["idx2str"],
                    item["fallback"],
                    array(item["table"]),
                )
            )
    clip = spec["clip"]
    network = Network(
        combiner=[layer(i) for i in spec["combiner"]],
        output_fc=[layer(i) for i in spec["output_fc"]],
        decoder=layer(spec["decoder"]),
        clip=None if clip is None else (float(clip[0]), float(clip[1])),
        output_norm=affine(spec["output_norm"]),
        output=str(spec.get("output", NUMBER_OUTPUT)),
    )
    return PortablePredictor(dict(spec["config"]), inputs, network)


def category_input(
    name: str, fill: str, idx2str: Sequence[str], fallback: int, table: np.ndarray | None
) -> CategoryInput:
    return CategoryInput(
        name=name,
        fill=fill,
        str2idx={s: i for i, s in enumerate(idx2str)},
        idx2str=tuple(idx2str),
        fallback=int(fallback),
        stripped_vocab=all(s == s.strip() for s in idx2str),
        table=table,
    )


def save(folder: str | Path, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Path:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(json.dumps(spec, indent=1, sort_keys=True))
    np.savez(out / ARRAYS_FILE, allow_pickle=False, **arrays)
    return out
