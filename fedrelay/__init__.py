"""fedrelay: federated training jobs with on-chain bookkeeping.

This package holds the command line (`fedrelay`) and the pieces every service shares
(settings, benchmarks). The services themselves live in `relayer`, `coordinator` and `worker`;
everything that talks to the outside world lives in `adapters`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedrelay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
