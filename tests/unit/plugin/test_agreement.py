"""What the plugin and the job-service both write down (the plugin cannot import the package): the same."""

from typing import get_args

from orthanc_jobs import INTERNAL_PREFIX
from orthanc_jobs.api.auth import SERVER_HEADER
from orthanc_jobs.api.plugins import EventType, PluginGap, router
from tests.unit.plugin.stubs import plugin


def test_the_internal_route_prefix_is_the_same():
    assert plugin.INTERNAL_PREFIX == INTERNAL_PREFIX


def test_the_header_naming_the_server_is_the_same():
    assert plugin.SERVER_HEADER.lower() == SERVER_HEADER.lower()


def test_the_routes_the_plugin_posts_to_are_the_job_services():
    # The plugin posts to these (the ServiceStub's tests check it); the job-service must serve them.
    posted = {INTERNAL_PREFIX + route for route in ("/register", "/heartbeat", "/events")}
    served = {route.path for route in router.routes if "POST" in getattr(route, "methods", ())}
    assert posted <= served


def test_the_event_types_are_the_same():
    assert {*plugin.JOB_EVENTS.values(), "ORTHANC_STOPPED"} == set(get_args(EventType))


def test_the_gap_has_the_fields_the_job_service_reads():
    outbox = plugin.Outbox(1, 0)
    outbox.lose("event")
    assert set(outbox.gap()) == set(PluginGap.model_fields)
