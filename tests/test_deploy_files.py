"""The deployment files say what the tests prove: two processes sharing PostgreSQL and Redis,
migrations applied once, SSE unbuffered, a stop timeout above the shutdown grace period."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_compose_runs_two_processes_on_shared_state() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    servers = [name for name in services if name.startswith("opentess-")]
    assert len(servers) >= 2
    for name in servers:
        env = services[name]["environment"]
        assert env["OPENTESS_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["OPENTESS_REDIS_URL"].startswith("redis://")
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        grace = int(env["OPENTESS_SHUTDOWN_GRACE_S"])
        assert int(services[name]["stop_grace_period"].rstrip("s")) > grace
    assert services["migrate"]["command"] == ["opentess", "migrate"]
    assert {"postgres", "redis", "nginx"} <= set(services)


def test_nginx_does_not_buffer_streams() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_buffering off;" in conf
    assert "proxy_http_version 1.1;" in conf
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    servers = {name for name in compose["services"] if name.startswith("opentess-")}
    assert set(re.findall(r"server (opentess-\d+):8000;", conf)) == servers


def test_systemd_unit_stops_after_the_grace_period() -> None:
    unit = (DEPLOY / "opentess.service").read_text()
    assert "ExecStart=/opt/opentess/bin/opentess serve" in unit
    assert int(re.search(r"TimeoutStopSec=(\d+)", unit).group(1)) > 30  # type: ignore[union-attr]


def test_compose_searches_with_its_own_searxng() -> None:
    """The compose deployment's configuration loads, searches with the SearXNG service, and that
    SearXNG answers JSON (its default settings do not)."""
    from opentess.settings import Settings

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert "searxng" in compose["services"]
    settings = Settings(config=DEPLOY / "opentess.toml")
    assert settings.search is not None and settings.search.provider == "searxng"
    assert settings.search.base_url == "http://searxng:8080"
    searxng = yaml.safe_load((DEPLOY / "searxng" / "settings.yml").read_text())
    assert "json" in searxng["search"]["formats"]
