"""Fast predictions from a trained Ludwig model, equal to ``LudwigModel.predict``.

``LudwigModel.predict`` rebuilds a pandas preprocessing pipeline on every call (about
33 ms for one row). The models this project trains are small ECD networks, so the same
numbers come out of a few array operations:

* inputs are preprocessed in NumPy exactly as Ludwig's pandas path does it: missing
  values filled with the training-set fill value, numbers cast to float32 and
  normalised with the training-set statistics (``(x - mean) / std`` for zscore, in
  float32), categories looked up in the training vocabulary (after ``str.strip``;
  unknown values fall back to ``<UNK>`` when the vocabulary has it, else to the most
  frequent training value, as Ludwig does);
* the network runs on the model's own weights with ``torch.nn.functional`` (the kernels
  Ludwig's modules call, so results are bit-for-bit those of Ludwig's batch
  predictions): passthrough number encoders, embedding lookups for categories, the
  concat combiner's fully connected stack, the output feature's fully connected stack
  and its regressor, the ``clip`` of the prediction module;
* the output is denormalised in float64, as Ludwig's postprocessing does; a binary
  output (a classifier, no calibration) is the sigmoid of the regressor's logit, Ludwig's
  probability of ``True`` (``<target>_probabilities_True``), as float64; a category
  output (no calibration, not the CORN loss) is the softmax of its classifier's logits,
  Ludwig's ``<target>_probabilities`` (rows x classes, in the order of its vocabulary,
  which is written into the config's output feature as ``classes``).

The weights and the training-set metadata are read from a ``LudwigModel`` or from a saved
model folder (``model_hyperparameters.json``, ``training_set_metadata.json``,
``model_weights.safetensors``, the files ``log_model`` stores in MLflow), so loading a
registered version needs neither Ludwig nor its 13 s import. A configuration outside
what is mirrored here (another combiner, encoder, normalisation, outlier handling, ...)
raises :class:`UnsupportedModelError`; :func:`as_predictor` and :func:`load_dir` then
fall back to ``LudwigModel.predict`` with a logged warning.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.contracts.portable import (
    BINARY_OUTPUT,
    CATEGORY_OUTPUT,
    CLASSES_KEY,
    NUMBER_OUTPUT,
    UNKNOWN_SYMBOL,
    Affine,
    CategoryInput,
    ColumnsPredictor,
    DenseLayer,
    Network,
    NumberInput,
    PortablePredictor,
    Predictor,
    UnsupportedModelError,
    has_portable,
    output_type,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "FastPredictor",
    "LudwigPredictor",
    "PortablePredictor",
    "Predictor",
    "UnsupportedModelError",
    "as_predictor",
    "load_dir",
]

log = logging.getLogger(__name__)

HYPERPARAMETERS_FILE = "model_hyperparameters.json"
METADATA_FILE = "training_set_metadata.json"
WEIGHTS_FILE = "model_weights.safetensors"
LEGACY_WEIGHTS_FILE = "model_weights"

# Missing-value strategies whose fill value is known from the training set, so each row
# is preprocessed on its own (bfill, ffill and drop_row depend on the other rows).
_ROW_WISE_FILL = {"fill_with_const", "fill_with_mean", "fill_with_mode", "fill_with_false"}
_NORMALIZATIONS = {None, "zscore", "minmax", "iq"}
_OUTPUT_NORMALIZATIONS = {None, "zscore", "minmax", "iq", "log1p"}
_ACTIVATIONS = {
    "relu",
    "tanh",
    "sigmoid",
    "elu",
    "leakyRelu",
    "gelu",
    "silu",
    "swish",
    "relu6",
    "selu",
    "mish",
    "logSigmoid",
    "hardswish",
}


# What the fast path (and so the portable export) reproduces: one set of rules, checked on
# a trained model's config and metadata (FastPredictor) and, before any training, on a
# config Ludwig has filled in with its defaults (check_config, ``mlops models create``).


def check_config(config: Mapping[str, Any]) -> None:
    """UnsupportedModelError naming the first thing of ``config`` (with Ludwig's defaults
    filled in: ``ModelConfig.from_dict(c).to_dict()``) the export does not reproduce."""
    check_model(config)
    for feature in config.get("input_features") or []:
        check_input(feature, feature.get("preprocessing") or {})


def check_model(config: Mapping[str, Any]) -> None:
    """The model type, combiner and output feature (the inputs: :func:`check_input`)."""
    if config.get("model_type", "ecd") != "ecd":
        raise UnsupportedModelError(f"model_type {config.get('model_type')!r}")
    outputs = config.get("output_features") or []
    if len(outputs) != 1:
        raise UnsupportedModelError("exactly one output feature is supported")
    if not config.get("input_features"):
        raise UnsupportedModelError("no input features")
    combiner = config.get("combiner") or {}
    if combiner.get("type", "concat") != "concat":
        raise UnsupportedModelError(f"combiner {combiner.get('type')!r}")
    if combiner.get("batch_ensemble"):
        raise UnsupportedModelError("the concat combiner's batch_ensemble")
    fc_activations(
        "combiner.fc_stack",
        combiner.get("fc_layers"),
        combiner.get("num_fc_layers", 0),
        combiner.get("norm"),
        combiner.get("activation", "relu"),
    )
    output = outputs[0]
    decoder = _output_decoder(output)
    fc_activations(
        f"output_features.module_dict.{output.get('name')}__ludwig.fc_stack",
        decoder.get("fc_layers"),
        decoder.get("num_fc_layers", 0),
        decoder.get("fc_norm"),
        decoder.get("fc_activation", "relu"),
    )
    clip = output.get("clip")
    if clip is not None and not (isinstance(clip, (list, tuple)) and len(clip) == 2):
        raise UnsupportedModelError(f"clip {clip!r}")
    output_normalization(output, {})


def output_normalization(output: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
    """The output's normalisation (the metadata's, else the config's; none for a binary or
    category output: a probability has nothing to undo)."""
    if str(output.get("type")) != NUMBER_OUTPUT:
        return None
    norm = (meta.get("preprocessing") or output.get("preprocessing") or {}).get("normalization")
    if norm not in _OUTPUT_NORMALIZATIONS:
        raise UnsupportedModelError(f"output normalization {norm!r}")
    return norm


def check_input(feature: Mapping[str, Any], pre: Mapping[str, Any]) -> None:
    """One input feature with its preprocessing (``pre``)."""
    name, kind = feature["name"], feature.get("type")
    if feature.get("tied"):
        raise UnsupportedModelError(f"tied input feature {name!r}")
    if feature.get("column", name) != name:
        raise UnsupportedModelError(f"input feature {name!r} reads another column")
    strategy = pre.get("missing_value_strategy", "fill_with_const")
    if strategy not in _ROW_WISE_FILL:
        raise UnsupportedModelError(f"missing_value_strategy {strategy!r} of {name!r}")
    encoder = (feature.get("encoder") or {}).get("type")
    if kind == "number":
        if encoder != "passthrough":
            raise UnsupportedModelError(f"number encoder {encoder!r} of {name!r}")
        if pre.get("outlier_strategy") is not None:
            raise UnsupportedModelError(f"outlier_strategy of {name!r}")
        if pre.get("normalization") not in _NORMALIZATIONS:
            raise UnsupportedModelError(f"normalization {pre.get('normalization')!r} of {name!r}")
    elif kind == "category":
        if encoder not in {"dense", "sparse", "passthrough"}:
            raise UnsupportedModelError(f"category encoder {encoder!r} of {name!r}")
    else:
        raise UnsupportedModelError(f"input feature type {kind!r} of {name!r}")


def fc_activations(
    prefix: str,
    layers: Sequence[Mapping[str, Any]] | None,
    num_layers: int,
    norm: str | None,
    activation: str | None,
) -> list[str | None]:
    """The activation of each layer of a fully connected stack (Ludwig's ``FCStack``)."""
    if norm is not None:
        raise UnsupportedModelError(f"norm {norm!r} in {prefix}")
    specs = [dict(layer) for layer in layers] if layers is not None else [{}] * num_layers
    found: list[str | None] = []
    for spec in specs:
        if spec.get("norm") is not None:
            raise UnsupportedModelError(f"norm {spec['norm']!r} in {prefix}")
        act = spec.get("activation", activation)
        if act is not None and act not in _ACTIVATIONS:
            raise UnsupportedModelError(f"activation {act!r} in {prefix}")
        found.append(act)
    return found


# Preprocessing specifications, read from the training-set metadata.


@dataclass(frozen=True)
class _Layer:
    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: str | None
    residual: bool = False


# The fast predictor.


class FastPredictor(ColumnsPredictor):
    """An ECD regressor, binary or category classifier evaluated without Ludwig's per-call
    pipeline.

    Thread-safe: it holds no mutable state after construction.
    """

    kind = "fast"

    def __init__(
        self,
        config: dict[str, Any],
        metadata: Mapping[str, Any],
        weights: Mapping[str, Any],
    ) -> None:
        import torch

        self.config = config
        check_model(config)
        output = config["output_features"][0]
        self.target: str = output["name"]
        self.input_features: dict[str, str] = {}
        self._inputs: list[NumberInput | CategoryInput] = []
        tensors = {k: _tensor(v) for k, v in weights.items()}
        for feature in config.get("input_features") or []:
            self._inputs.append(_input_spec(feature, metadata, tensors))
            self.input_features[feature["name"]] = feature["type"]
        self.width = sum(1 if isinstance(s, NumberInput) else s.width for s in self._inputs)
        combiner = config.get("combiner") or {}
        self._combiner = _fc_stack(
            tensors,
            "combiner.fc_stack",
            layers=combiner.get("fc_layers"),
            num_layers=combiner.get("num_fc_layers", 0),
            norm=combiner.get("norm"),
            activation=combiner.get("activation", "relu"),
            residual=bool(combiner.get("residual", False)),
            input_size=self.width,
        )

        self._output = str(output.get("type"))
        decoder = _output_decoder(output)
        if self._output == CATEGORY_OUTPUT:
            self.config = _with_classes(config, metadata.get(self.target) or {})
        prefix = f"output_features.module_dict.{self.target}__ludwig"
        self._output_fc = _fc_stack(
            tensors,
            f"{prefix}.fc_stack",
            layers=decoder.get("fc_layers"),
            num_layers=decoder.get("num_fc_layers", 0),
            norm=decoder.get("fc_norm"),
            activation=decoder.get("fc_activation", "relu"),
            residual=False,
            input_size=None,
        )
        self._decoder = _Layer(
            _require(tensors, f"{prefix}.decoder_obj.dense.dense.weight"),
            tensors.get(f"{prefix}.decoder_obj.dense.dense.bias"),
            None,
        )
        clip = output.get("clip")
        self._clip = None if clip is None else (float(clip[0]), float(clip[1]))
        out_meta = metadata.get(self.target, {})
        out_norm = output_normalization(output, out_meta)
        self._output_norm = Affine.from_metadata(out_norm, out_meta, self.target)
        self._torch = torch
        # Check the shapes once, on a row of fill values, so a mismatch fails at load time.
        try:
            self.predict_columns({name: [None] for name in self.input_features})
        except (RuntimeError, IndexError) as exc:
            raise UnsupportedModelError(f"the weights do not fit the config: {exc}") from None

    # Construction.

    @classmethod
    def from_ludwig(cls, model: Any) -> FastPredictor:
        """From a ``LudwigModel`` (trained in this process or loaded)."""
        config_obj = getattr(model, "config_obj", None)
        config = config_obj.to_dict() if config_obj is not None else dict(model.config)
        metadata = getattr(model, "training_set_metadata", None)
        if metadata is None or getattr(model, "model", None) is None:
            raise UnsupportedModelError("the Ludwig model is not trained")
        state = {k: v.detach().cpu() for k, v in model.model.state_dict().items()}
        return cls(config, metadata, state)

    @classmethod
    def from_dir(cls, path: str | Path) -> FastPredictor:
        """From a saved Ludwig model folder, or an MLflow model folder logged by Ludwig."""
        folder = ludwig_model_dir(path)
        config = json.loads((folder / HYPERPARAMETERS_FILE).read_text())
        metadata = json.loads((folder / METADATA_FILE).read_text())
        if (folder / WEIGHTS_FILE).exists():
            from safetensors.torch import load_file

            weights: Mapping[str, Any] = load_file(str(folder / WEIGHTS_FILE), device="cpu")
        elif (folder / LEGACY_WEIGHTS_FILE).exists():
            import torch

            weights = torch.load(
                folder / LEGACY_WEIGHTS_FILE, map_location="cpu", weights_only=True
            )
        else:
            raise UnsupportedModelError(f"no weights file in {folder}")
        return cls(config, metadata, weights)

    def portable(self) -> PortablePredictor:
        """The same model as plain arrays, evaluated with NumPy alone."""

        def dense(layer: _Layer) -> DenseLayer:
            bias = None if layer.bias is None else layer.bias.numpy().copy()
            return DenseLayer(layer.weight.numpy().copy(), bias, layer.activation, layer.residual)

        network = Network(
            combiner=[dense(layer) for layer in self._combiner],
            output_fc=[dense(layer) for layer in self._output_fc],
            decoder=dense(self._decoder),
            clip=self._clip,
            output_norm=self._output_norm,
            output=self._output,
        )
        return PortablePredictor(self.config, list(self._inputs), network)

    # Prediction.

    def predict_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        """Columns of raw values (lists, arrays or Series), one per input feature."""
        torch = self._torch
        first = columns[self._inputs[0].name]
        rows = len(first)
        if rows == 0:
            return np.empty(0, dtype=np.float64)
        # Allocated by torch, like the concatenation in Ludwig's combiner (same alignment).
        x = torch.empty((rows, self.width), dtype=torch.float32)
        hidden = x.numpy()
        at = 0
        for spec in self._inputs:
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
        x = _run(torch, self._combiner, x)
        x = _run(torch, self._output_fc, x)
        logits = torch.nn.functional.linear(x, self._decoder.weight, self._decoder.bias)
        if self._clip is not None:
            logits = torch.clamp(logits, self._clip[0], self._clip[1])
        if self._output == CATEGORY_OUTPUT:
            return torch.softmax(logits, -1).numpy().astype(np.float64)
        if self._output == BINARY_OUTPUT:
            logits = torch.sigmoid(logits)
        return self._output_norm.inverse64(logits.reshape(-1).numpy())


def _output_decoder(output: Mapping[str, Any]) -> Mapping[str, Any]:
    """The output feature's decoder, refusing what the fast path does not mirror: another
    output type, calibration, the CORN loss, dependencies, another decoder."""
    kind = str(output.get("type"))
    if kind not in {NUMBER_OUTPUT, BINARY_OUTPUT, CATEGORY_OUTPUT}:
        raise UnsupportedModelError(f"output feature type {output.get('type')!r}")
    if kind != NUMBER_OUTPUT and output.get("calibration"):
        raise UnsupportedModelError(f"a calibrated {kind} output")
    if kind == CATEGORY_OUTPUT and (output.get("loss") or {}).get("type") == "corn":
        raise UnsupportedModelError("a category output with the CORN loss")
    if output.get("dependencies"):
        raise UnsupportedModelError("output feature dependencies")
    decoder = output.get("decoder") or {}
    expected = "classifier" if kind == CATEGORY_OUTPUT else "regressor"
    if decoder.get("type", expected) != expected:
        raise UnsupportedModelError(f"decoder {decoder.get('type')!r}")
    return decoder


def _with_classes(config: dict[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with its category output's vocabulary as ``classes`` (the order of the
    probabilities), so the export carries them."""
    if "idx2str" not in meta:
        raise UnsupportedModelError("no vocabulary in the category output's metadata")
    output = {**config["output_features"][0], CLASSES_KEY: [str(c) for c in meta["idx2str"]]}
    return {**config, "output_features": [output, *config["output_features"][1:]]}


def _tensor(value: Any) -> torch.Tensor:
    import torch

    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    # A copy in torch's own (aligned) memory: a tensor mapped from a safetensors file may sit
    # at an offset where the matmul kernels take another path and round differently.
    return value.detach().to(dtype=torch.float32).clone(memory_format=torch.contiguous_format)


def _require(tensors: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    try:
        return tensors[key]
    except KeyError:
        raise UnsupportedModelError(f"weight {key} not found") from None


def _input_spec(
    feature: Mapping[str, Any], metadata: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> NumberInput | CategoryInput:
    name = feature["name"]
    kind = feature.get("type")
    meta = metadata.get(name)
    if meta is None:
        raise UnsupportedModelError(f"no training-set metadata for {name!r}")
    pre = meta.get("preprocessing") or feature.get("preprocessing") or {}
    check_input(feature, pre)
    encoder = (feature.get("encoder") or {}).get("type")
    if kind == "number":
        fill = pre.get("computed_fill_value")
        return NumberInput(
            name=name,
            fill=None if fill is None else float(fill),
            norm=Affine.from_metadata(pre.get("normalization"), meta, name),
        )
    if kind == "category":
        idx2str = [str(s) for s in meta["idx2str"]]
        str2idx = {str(k): int(v) for k, v in meta["str2idx"].items()}
        if UNKNOWN_SYMBOL in str2idx:
            fallback = str2idx[UNKNOWN_SYMBOL]
        else:
            # Ludwig's choice for a value outside the vocabulary: the most frequent one.
            freq = meta.get("str2freq") or {}
            fallback = str2idx[max(freq, key=lambda value: freq[value])] if freq else 0
        table = None
        if encoder != "passthrough":
            key = f"input_features.module_dict.{name}__ludwig.encoder_obj.embed.embeddings.weight"
            table = _require(tensors, key).numpy()
            if table.shape[0] != len(idx2str):
                raise UnsupportedModelError(f"embedding of {name!r} does not match its vocabulary")
        fill = pre.get("computed_fill_value", pre.get("fill_value", UNKNOWN_SYMBOL))
        return CategoryInput(
            name=name,
            fill=str(fill) if fill is not None else UNKNOWN_SYMBOL,
            str2idx=str2idx,
            idx2str=tuple(idx2str),
            fallback=fallback,
            stripped_vocab=all(s == s.strip() for s in idx2str),
            table=table,
        )
    raise UnsupportedModelError(f"input feature type {kind!r} of {name!r}")


def _fc_stack(
    tensors: Mapping[str, torch.Tensor],
    prefix: str,
    *,
    layers: list[dict[str, Any]] | None,
    num_layers: int,
    norm: str | None,
    activation: str | None,
    residual: bool,
    input_size: int | None,
) -> list[_Layer]:
    """Ludwig's ``FCStack`` in eval mode: Linear, activation (dropout is a no-op)."""
    out: list[_Layer] = []
    previous = input_size
    for i, act in enumerate(fc_activations(prefix, layers, num_layers, norm, activation)):
        weight = _require(tensors, f"{prefix}.stack.{i}.layers.0.weight")
        bias = tensors.get(f"{prefix}.stack.{i}.layers.0.bias")
        size = int(weight.shape[0])
        # FCStack adds the input back when a layer keeps the width of the previous one.
        out.append(_Layer(weight, bias, act, residual and previous == size))
        previous = size
    return out


def _activate(torch: Any, name: str | None, x: torch.Tensor) -> torch.Tensor:
    f = torch.nn.functional
    if name is None:
        return x
    return {
        "relu": f.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "elu": f.elu,
        "leakyRelu": f.leaky_relu,
        "gelu": f.gelu,
        "silu": f.silu,
        "swish": f.silu,
        "relu6": f.relu6,
        "selu": f.selu,
        "mish": f.mish,
        "logSigmoid": f.logsigmoid,
        "hardswish": f.hardswish,
    }[name](x)


def _run(torch: Any, layers: list[_Layer], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        out = _activate(
            torch, layer.activation, torch.nn.functional.linear(x, layer.weight, layer.bias)
        )
        x = x + out if layer.residual else out
    return x


# The fallback: Ludwig itself.


class LudwigPredictor:
    """``LudwigModel.predict`` behind the same interface (for configs the fast path lacks)."""

    kind = "ludwig"

    def __init__(self, model: Any) -> None:
        self.model = model
        # LudwigModel.predict is not documented as thread-safe: one call at a time.
        self._lock = threading.Lock()
        self.config = dict(model.config)
        self.target = self.config["output_features"][0]["name"]
        self.input_features = {f["name"]: f["type"] for f in self.config["input_features"]}

    def describe(self) -> dict[str, Any]:
        return {"predictor": self.kind, "target": self.target, "inputs": self.input_features}

    @property
    def output_type(self) -> str:
        return output_type(self.config)

    @property
    def classes(self) -> tuple[str, ...] | None:
        """A category output's classes (its vocabulary); else None."""
        if self.output_type != CATEGORY_OUTPUT:
            return None
        return tuple(str(c) for c in self.model.training_set_metadata[self.target]["idx2str"])

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        if frame.empty:
            return np.empty(0, dtype=np.float64)
        inputs = frame[list(self.input_features)].reset_index(drop=True)
        with self._lock:
            predictions, _ = self.model.predict(inputs)
        return ludwig_output(predictions, self.target, self.config)

    def predict_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        frame = pd.DataFrame({name: list(columns[name]) for name in self.input_features})
        return self.predict_frame(frame)

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.predict_columns(
            {name: [record.get(name) for record in records] for name in self.input_features}
        )


def ludwig_output(predictions: pd.DataFrame, target: str, config: Mapping[str, Any]) -> np.ndarray:
    """What a predictor gives for ``LudwigModel.predict``'s frame: a regressor's
    ``<target>_predictions``, a classifier's probability of ``True``, a category output's
    ``<target>_probabilities`` (rows x classes).
    """
    kind = config["output_features"][0].get("type")
    if kind == CATEGORY_OUTPUT:
        rows = predictions[f"{target}_probabilities"]
        return np.array([np.asarray(row, dtype="float64") for row in rows]).reshape(len(rows), -1)
    suffix = "probabilities_True" if kind == BINARY_OUTPUT else "predictions"
    return predictions[f"{target}_{suffix}"].to_numpy(dtype="float64")


_warned: set[str] = set()


def _warn_fallback(what: str, reason: str) -> None:
    message = f"{what}: the fast predictor does not support {reason}; using LudwigModel.predict."
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def as_predictor(model: Any) -> Predictor:
    """A predictor for ``model``: itself if it is one, else the fast path or Ludwig's."""
    if isinstance(model, FastPredictor | LudwigPredictor | PortablePredictor):
        return model
    try:
        return FastPredictor.from_ludwig(model)
    except UnsupportedModelError as exc:
        _warn_fallback("Ludwig model", str(exc))
        return LudwigPredictor(model)


def ludwig_model_dir(path: str | Path) -> Path:
    """The folder with the Ludwig files, given it or an MLflow model folder around it."""
    folder = Path(path)
    if (folder / HYPERPARAMETERS_FILE).exists():
        return folder
    mlmodel = folder / "MLmodel"
    if mlmodel.exists():
        import yaml

        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
        data = (flavors.get("ludwig") or {}).get("data", "model")
        if (folder / data / HYPERPARAMETERS_FILE).exists():
            return folder / data
    if (folder / "model" / HYPERPARAMETERS_FILE).exists():
        return folder / "model"
    raise FileNotFoundError(f"{path} holds no saved Ludwig model ({HYPERPARAMETERS_FILE}).")


def load_dir(path: str | Path) -> Predictor:
    """A predictor for a saved model folder: its portable form when it has one (NumPy
    alone), else the fast path on its weights (torch), else Ludwig itself.
    """
    if has_portable(path):
        return PortablePredictor.from_dir(path)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UnsupportedModelError(
            f"{path} holds no portable model and torch is not installed here (a version "
            "registered before portable exports: retrain it, or load it where torch is)"
        ) from None
    try:
        return FastPredictor.from_dir(path)
    except UnsupportedModelError as exc:
        _warn_fallback(f"Model {path}", str(exc))
    from ludwig.api import LudwigModel

    return LudwigPredictor(
        LudwigModel.load(str(ludwig_model_dir(path)), backend="local", logging_level=logging.ERROR)
    )
