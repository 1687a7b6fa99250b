"""Strategies as configuration: which model each strategy trades, how, and on which account.

A strategies file (``STRATEGIES_FILE``, YAML; in the cluster the ConfigMap
``mlops-strategies``) lists named strategies. Each one sets the trading settings it wants
different from the environment's (the same names as the ConfigMap's: ``MODEL_NAME``,
``TRADE_RULE``, ``TRADE_THRESHOLD``, ``RISK_MAX_OPEN_POSITIONS``, ``BROKER``...,
:data:`STRATEGY_SETTINGS`), and names the folder of its broker account's key pair
(``credentials``: the files ``ALPACA_API_KEY`` and ``ALPACA_SECRET_KEY``, a Secret
mounted as files; ``secret``: that Secret's name, which the daily run mounts into the
strategy's own trade Job). A key itself is never written in the file::

    strategies:
      - name: red
        credentials: /etc/mlops/alpaca/red
        secret: mlops-alpaca-red
        settings: {BROKER: alpaca, TRADE_RULE: rotation, RISK_MAX_OPEN_POSITIONS: 5}
      - name: blue
        settings: {MODEL_NAME: stock-direction}

Without a file there is one strategy, :data:`DEFAULT_STRATEGY`, whose settings are the
environment's: the system trades exactly as it did before strategies existed (and the
rows written before them belong to it).

The file is checked as a whole when it is read (pydantic): an unknown key, a setting that
is not a strategy's, a duplicate name, two strategies on one key pair is exit 2 with one
sentence. A strategy's values and credentials files are checked when it is used
(:func:`select`): a trade Job in the cluster has its own strategy's Secret only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.db.schema import DEFAULT_STRATEGY
from mlops.errors import ConfigError
from mlops.settings import Settings, load_settings_from

__all__ = [
    "DEFAULT_STRATEGY",
    "Strategy",
    "StrategySpec",
    "default_strategy",
    "load",
    "named",
    "select",
]

# A strategy's name: in client order ids, Job and lease names, labels (a DNS label that
# starts with a letter, so it never reads as a date).
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$")
SECRET_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
# An account's Secret (deployments/admission-policy.yaml admits only these in trade Jobs).
ACCOUNT_SECRET_PREFIX = "mlops-alpaca-"
# The files of a credentials folder (the keys of the account's Secret).
KEY_FILES = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY")
# What a strategy may set; everything else is the environment's, for every strategy.
STRATEGY_SETTINGS: tuple[str, ...] = (
    "MODEL_NAME",
    "TRADE_RULE",
    "TRADE_SELL",
    "TRADE_THRESHOLD",
    "TRADE_PROBABILITY_THRESHOLD",
    "TRADE_MAX_POSITION_VALUE",
    "TRADE_MANAGE_ALL_POSITIONS",
    "TRADE_TIME_IN_FORCE",
    "TRADE_ORDER_TYPE",
    "TRADE_LIMIT_BUFFER_BPS",
    "RISK_MAX_OPEN_POSITIONS",
    "RISK_MAX_GROSS_EXPOSURE",
    "RISK_MAX_ORDER_VALUE",
    "RISK_PRICE_BUFFER",
    "RISK_DAILY_LOSS_LIMIT",
    "RECONCILE_STRICT",
    "TRADING_HALTED",
    "BROKER",
    "PAPER_INITIAL_CASH",
    "ALPACA_BASE_URL",
    "ALPACA_LIVE_TRADING",
)


class StrategySpec(BaseModel):
    """One strategy as the file writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    settings: dict[str, bool | int | float | str] = Field(default_factory=dict)
    credentials: Path | None = None
    secret: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a strategy name (1 to 32 lower-case letters, digits and "
                "dashes, starting with a letter)"
            )
        return value

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        upper = {key.strip().upper(): v for key, v in value.items()}
        for key in upper:
            if key in KEY_FILES:
                raise ValueError(
                    f"{key} must not be written in the file: name the folder of the key "
                    "pair's files as credentials"
                )
            if key not in STRATEGY_SETTINGS:
                raise ValueError(
                    f"{key} is not a setting a strategy may set (those are "
                    f"{', '.join(STRATEGY_SETTINGS)})"
                )
        return upper

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and not SECRET_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes Secret name")
        if value is not None and not value.startswith(ACCOUNT_SECRET_PREFIX):
            # The admission policy lets the orchestrator mount only these into trade Jobs.
            raise ValueError(f"the Secret {value!r} must be named {ACCOUNT_SECRET_PREFIX}<name>")
        return value

    @model_validator(mode="after")
    def _secret_needs_a_folder(self) -> StrategySpec:
        if self.secret is not None and (
            self.credentials is None or not self.credentials.is_absolute()
        ):
            raise ValueError(
                f"secret {self.secret} needs credentials: the absolute folder its trade Job "
                "mounts it at"
            )
        return self


class StrategiesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategies: list[StrategySpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> StrategiesFile:
        seen: dict[str, str] = {}
        for spec in self.strategies:
            if spec.name in seen:
                raise ValueError(f"the name {spec.name} is given to two strategies")
            seen[spec.name] = spec.name
        folders: dict[Path, str] = {}
        for spec in self.strategies:
            if spec.credentials is None:
                continue
            if spec.credentials in folders:
                raise ValueError(
                    f"strategies {folders[spec.credentials]} and {spec.name} name the same "
                    f"credentials {spec.credentials}: each strategy trades its own account"
                )
            folders[spec.credentials] = spec.name
        return self


@dataclass(frozen=True)
class Strategy:
    """A strategy ready to trade: its name and its settings (the environment's, with its
    own values and its account's keys)."""

    name: str
    settings: Settings
    credentials: Path | None = None
    secret: str | None = None

    @property
    def lease(self) -> str:
        """Its part of the trade stage's lease (the default strategy's is today's)."""
        return "" if self.name == DEFAULT_STRATEGY else self.name


def default_strategy(settings: Settings) -> Strategy:
    """The one strategy when there is no strategies file: the settings as they are."""
    return Strategy(DEFAULT_STRATEGY, settings)


def load(settings: Settings) -> list[StrategySpec]:
    """The strategies of ``STRATEGIES_FILE`` (checked as a whole), or the default one."""
    path = settings.strategies_file
    if path is None:
        return [StrategySpec(name=DEFAULT_STRATEGY)]
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"STRATEGIES_FILE {path} does not exist.") from None
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"STRATEGIES_FILE {path} cannot be read: {first}.") from None
    try:
        parsed = StrategiesFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigError(f"STRATEGIES_FILE {path} is invalid: {_one_error(exc, raw)}.") from None
    specs = [_anchored(spec, Path(path).parent) for spec in parsed.strategies]
    _one_account_each(settings, specs, path)
    return specs


def select(settings: Settings, name: str | None = None) -> list[Strategy]:
    """The strategy ``name`` (None: every strategy, in the file's order), each checked:
    its values and its credentials files."""
    specs = load(settings)
    if name is not None:
        specs = [named(settings, name, specs)]
    return [resolve(settings, spec) for spec in specs]


def named(settings: Settings, name: str, specs: list[StrategySpec] | None = None) -> StrategySpec:
    """The strategy ``name`` as the file writes it (not resolved: no credentials read); an
    unknown name is one sentence (exit 2)."""
    specs = load(settings) if specs is None else specs
    for spec in specs:
        if spec.name == name:
            return spec
    where = (
        f"in STRATEGIES_FILE {settings.strategies_file}"
        if settings.strategies_file
        else "(STRATEGIES_FILE is not set, so the only strategy is default)"
    )
    raise ConfigError(
        f"There is no strategy {name!r} {where}; the strategies are "
        f"{', '.join(s.name for s in specs)}."
    )


def resolve(settings: Settings, spec: StrategySpec) -> Strategy:
    """``spec`` on top of ``settings``: its values checked, its key pair read."""
    overrides: dict[str, Any] = dict(spec.settings)
    if spec.credentials is not None:
        for key in KEY_FILES:
            overrides[key] = _read_key(spec, key)
    if not overrides:
        return Strategy(spec.name, settings, spec.credentials, spec.secret)
    try:
        derived = load_settings_from(settings, overrides)
    except ConfigError as exc:
        raise ConfigError(f"Strategy {spec.name}: {exc}") from None
    return Strategy(spec.name, derived, spec.credentials, spec.secret)


def _read_key(spec: StrategySpec, key: str) -> str:
    assert spec.credentials is not None
    path = spec.credentials / key
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        mounted = f" (is the Secret {spec.secret} mounted there?)" if spec.secret else ""
        raise ConfigError(
            f"Strategy {spec.name}: its credentials file {path} does not exist{mounted}."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"Strategy {spec.name}: its credentials file {path} cannot be read "
            f"({type(exc).__name__})."
        ) from None
    if not value:
        raise ConfigError(f"Strategy {spec.name}: its credentials file {path} is empty.")
    return value


def _anchored(spec: StrategySpec, folder: Path) -> StrategySpec:
    """A relative credentials folder is relative to the strategies file's folder."""
    if spec.credentials is None or spec.credentials.is_absolute():
        return spec
    return spec.model_copy(update={"credentials": folder / spec.credentials})


def _one_account_each(settings: Settings, specs: list[StrategySpec], path: Path) -> None:
    """Two Alpaca strategies without credentials would share the environment's key pair."""
    shared = [
        s.name
        for s in specs
        if s.credentials is None and str(s.settings.get("BROKER", settings.broker)) == "alpaca"
    ]
    if len(shared) > 1:
        raise ConfigError(
            f"STRATEGIES_FILE {path} is invalid: strategies {' and '.join(shared)} would both "
            "trade the account of the environment's ALPACA_API_KEY; give each its own "
            "credentials."
        )


def _one_error(exc: ValidationError, raw: Any) -> str:
    """The first error as words: where in the file, and what is wrong."""
    error = exc.errors()[0]
    loc = list(error.get("loc") or ())
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    where = _where(loc, raw)
    if error.get("type") == "extra_forbidden":
        return f"{where or 'the file'} has the unknown key {loc[-1]!r}"
    if error.get("type") == "missing":
        return f"{where or 'the file'} lacks {loc[-1]!r}"
    return f"{where}: {message}" if where else message


def _where(loc: list[Any], raw: Any) -> str:
    """``strategy red`` (or ``strategy 2``) for a location inside the list."""
    if len(loc) < 2 or loc[0] != "strategies" or not isinstance(loc[1], int):
        return ""
    index = loc[1]
    name = None
    if isinstance(raw, dict) and isinstance(raw.get("strategies"), list):
        items = raw["strategies"]
        if index < len(items) and isinstance(items[index], dict):
            name = items[index].get("name")
    return f"strategy {name}" if isinstance(name, str) else f"strategy {index + 1}"
