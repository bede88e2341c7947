"""The client's public surface: what ``from orthanc_jobs.client import ...`` offers, and nothing more."""

import importlib
import types

from orthanc_jobs import client

#: Each public name, by the module that defines it.
PUBLIC = {
    "errors": {"ApiError", "BadCredentials", "ClientError", "NotFound", "Unreachable"},
    "filters": {"JobFilter", "JobPage"},
    "jobs_client": {"DEFAULT_ORTHANC_PATH", "DEFAULT_URL", "JobsClient"},
    "sse": {"ServerSentEvent", "SseDecoder", "parse_sse", "sse_lines"},
}


def test_the_package_exports_its_modules_public_names() -> None:
    assert set(client.__all__) == set().union(*PUBLIC.values())
    for module_name, names in PUBLIC.items():
        module = importlib.import_module(f"orthanc_jobs.client.{module_name}")
        assert set(module.__all__) == names, module_name
        for name in names:
            assert getattr(client, name) is getattr(module, name)


def test_nothing_else_is_public() -> None:
    public = {
        name
        for name, value in vars(client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(client.__all__)


def test_every_error_carries_its_exit_code() -> None:
    errors = PUBLIC["errors"]
    codes = {name: getattr(client, name).exit_code for name in errors}
    assert codes == {"ApiError": 1, "BadCredentials": 4, "ClientError": 1, "NotFound": 1, "Unreachable": 3}
