"""Errors that end a command with one clear sentence and a non-zero exit."""


class MlopsError(Exception):
    """A failure the user can act on; its message is one sentence."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # Library messages often end with their own period: keep one.
        # One sentence on one line, whatever a library put into it.
        message = " ".join(str(message).split())
        while message.endswith(".."):
            message = message[:-1]
        super().__init__(message)


class ConfigError(MlopsError):
    """A setting or option is missing or wrong."""

    exit_code = 2


class DataError(MlopsError):
    """Input data is unreadable, malformed or fails the quality gate."""

    exit_code = 3


class ModelError(MlopsError):
    """A model cannot be trained, found or loaded."""

    exit_code = 4


class BrokerError(MlopsError):
    """The broker refused or failed an order."""

    exit_code = 5
