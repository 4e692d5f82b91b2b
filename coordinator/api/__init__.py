"""The coordinator's HTTP API, called by the worker SDK (FastAPI; spec at ``/openapi.json``).

One router per area: :mod:`.status` (round status), :mod:`.updates` (blobs and update uploads),
:mod:`.secagg` (secure-aggregation messages), :mod:`.challenges` (a worker's challenges and
answers), :mod:`.admin` (publishing, registration, issuing challenges). :mod:`.app` assembles
them; :mod:`.dependencies` holds what the routes share and :mod:`.errors` the refusals and their
HTTP statuses. The routes, who may call them and every error's body are described in
:data:`fedrelay.coordinator.api.app.DESCRIPTION`.
"""

from fedrelay.coordinator.api.app import create_app
from fedrelay.coordinator.api.errors import (
    AdminUnauthorized,
    ApiError,
    BodyTooLarge,
    InvalidBody,
    NotAssigned,
    UnknownResource,
    WrongPhase,
)
from fedrelay.coordinator.settings import ApiSettings

__all__ = [
    "AdminUnauthorized",
    "ApiError",
    "ApiSettings",
    "BodyTooLarge",
    "InvalidBody",
    "NotAssigned",
    "UnknownResource",
    "WrongPhase",
    "create_app",
]
