"""The reporter's settings: Orthanc's configuration, its OrthancJobs section, the environment."""

import pytest

from tests.unit.plugin.stubs import (
    plugin,
)


def test_settings_defaults(clean_env):
    assert plugin._settings({}) == {
        "Url": ["http://127.0.0.1:8050"],
        "IgnoredUrls": [],
        "Secret": "",
        "ServerUrl": "http://127.0.0.1:8042",
        "HeartbeatInterval": 2.0,
        "QueueSize": 10000,
        "Timeout": 2.0,
        "LocalUrl": "http://127.0.0.1:8042",
        "QueueBytes": 64 * 1024 * 1024,
    }


def test_settings_from_the_orthancjobs_section(clean_env):
    configuration = {
        "HttpPort": 9042,
        "OrthancJobs": {
            "Url": "http://jobs:8050",
            "Secret": "from-config",
            "ServerUrl": "http://10.0.0.5:8042",
            "HeartbeatInterval": "0.5",
            "QueueSize": "20",
            "QueueBytes": 1000,
            "Timeout": 3,
        },
    }
    assert plugin._settings(configuration) == {
        "Url": ["http://jobs:8050"],
        "IgnoredUrls": [],
        "Secret": "from-config",
        "ServerUrl": "http://10.0.0.5:8042",
        "HeartbeatInterval": 0.5,
        "QueueSize": 20,
        "Timeout": 3.0,
        "LocalUrl": "http://127.0.0.1:9042",
        "QueueBytes": 1000,
    }


def test_environment_overrides_the_section(clean_env):
    clean_env.setenv("ORTHANC_JOBS_URL", "http://env-jobs:9000")
    clean_env.setenv("ORTHANC_JOBS_SECRET", "from-env")
    clean_env.setenv("ORTHANC_JOBS_SERVER_URL", "https://orthanc-1.example:8443")
    configuration = {
        "OrthancJobs": {"Url": "http://jobs:8050", "Secret": "from-config", "ServerUrl": "http://x:1"}
    }

    settings = plugin._settings(configuration)

    assert settings["Url"] == ["http://env-jobs:9000"]
    assert settings["Secret"] == "from-env"
    assert settings["ServerUrl"] == "https://orthanc-1.example:8443"


def test_empty_environment_variables_do_not_override(clean_env):
    for name in ("ORTHANC_JOBS_URL", "ORTHANC_JOBS_SECRET", "ORTHANC_JOBS_SERVER_URL"):
        clean_env.setenv(name, "")
    configuration = {"OrthancJobs": {"Url": "http://jobs:8050", "Secret": "from-config"}}

    settings = plugin._settings(configuration)

    assert settings["Url"] == ["http://jobs:8050"]
    assert settings["Secret"] == "from-config"
    assert settings["ServerUrl"] == "http://127.0.0.1:8042"


@pytest.mark.parametrize(
    ("configuration", "expected"),
    [
        ({"HttpPort": 9042}, "http://127.0.0.1:9042"),
        ({"HttpPort": "8043"}, "http://127.0.0.1:8043"),
        ({"SslEnabled": True}, "https://127.0.0.1:8042"),
        ({"SslEnabled": True, "HttpPort": 443}, "https://127.0.0.1:443"),
        ({"SslEnabled": False, "HttpPort": 80}, "http://127.0.0.1:80"),
    ],
)
def test_default_server_url_derives_from_http_port_and_ssl(clean_env, configuration, expected):
    assert plugin._settings(configuration)["ServerUrl"] == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://jobs-1:8050", ["http://jobs-1:8050"]),
        ("http://jobs-1:8050/, https://jobs-2:8443 ", ["http://jobs-1:8050", "https://jobs-2:8443"]),
        (["http://jobs-1:8050", "http://jobs-2:8050/"], ["http://jobs-1:8050", "http://jobs-2:8050"]),
        ("http://jobs-1:8050,,http://jobs-1:8050/,", ["http://jobs-1:8050"]),  # empty and repeated: once
        (["http://10.0.0.7:8050/jobs/"], ["http://10.0.0.7:8050/jobs"]),  # behind a path prefix
    ],
    ids=["one", "comma-separated", "list", "empty-and-repeated", "path"],
)
def test_url_names_the_job_service_or_its_replicas(clean_env, url, expected):
    settings = plugin._settings({"OrthancJobs": {"Url": url}})

    assert settings["Url"] == expected
    assert settings["IgnoredUrls"] == []


def test_entries_that_are_not_http_urls_are_ignored_and_told(clean_env):
    url = ["jobs-1:8050", "http://jobs-2:8050", 8050, None, "ftp://jobs-3", "http://:8050", "http://jobs-4:x"]

    settings = plugin._settings({"OrthancJobs": {"Url": url}})

    assert settings["Url"] == ["http://jobs-2:8050"]
    assert settings["IgnoredUrls"] == [
        "jobs-1:8050",
        8050,
        None,
        "ftp://jobs-3",
        "http://:8050",
        "http://jobs-4:x",
    ]


@pytest.mark.parametrize("url", ["", " , ", [], ["", "  "], ["jobs:8050"], "not a url", 8050, None])
def test_no_url_left_is_the_default(clean_env, url):
    assert plugin._settings({"OrthancJobs": {"Url": url}})["Url"] == ["http://127.0.0.1:8050"]


def test_the_environment_names_replicas_separated_by_commas(clean_env):
    clean_env.setenv("ORTHANC_JOBS_URL", "http://jobs-1:8050, http://jobs-2:8050")

    settings = plugin._settings({"OrthancJobs": {"Url": ["http://elsewhere:8050"]}})

    assert settings["Url"] == ["http://jobs-1:8050", "http://jobs-2:8050"]


def test_an_environment_without_a_usable_url_does_not_override(clean_env):
    clean_env.setenv("ORTHANC_JOBS_URL", "jobs-1:8050,")

    settings = plugin._settings({"OrthancJobs": {"Url": "http://jobs:8050"}})

    assert settings["Url"] == ["http://jobs:8050"]
    assert settings["IgnoredUrls"] == ["jobs-1:8050"]
