"""Where the edge finds the services: one typed key on the application."""

from __future__ import annotations

from aiohttp import web

from proxy.services import Services

SERVICES = web.AppKey("services", Services)


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]
