"""`/held/{id}`: the page (and JSON) the 403 message points a refused user to, and
`POST /held/{id}/requests` to ask for an exception (issue 12 item 7). No admin token needed:
it tells what is held, why in plain words (finding titles, never payloads), since when, how many
asked, and the reviewer's decision once there is one. A private or gated repo's names are not
told (ids can be guessed).
"""

from __future__ import annotations

import functools

import jinja2
from aiohttp import web

from proxy.admin.review import PublicView
from proxy.errors import InvalidInput
from proxy.hub.bodies import BodyLimits, read_form_or_json
from proxy.hub.context import services_of
from proxy.hub.requests import caller_of, review_id_of

MAX_FORM_BYTES = 16 * 1024
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Held: {{ v.path }}</title>
<style>body{font-family:sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.5}
code{background:#f3f3f3;padding:0 .2rem}.state{font-weight:bold}textarea{width:100%}</style>
</head><body>
<h1>{{ v.path }}</h1>
<p>{% if v.repo %}From <code>{{ v.repo }}</code>. {% endif %}State:
<span class="state">{{ v.state }}</span> since {{ v.since }}.</p>
{% if v.reasons %}<h2>Why</h2>
<ul>{% for r in v.reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
{% if v.decision %}<h2>Decision</h2><p>{{ v.decision }}</p>{% endif %}
<p>{{ v.requests }} request(s) for an exception so far.</p>
{% if v.state == "quarantined" %}
<h2>Ask for an exception</h2>
<form method="post" action="/held/{{ v.review_id }}/requests">
<p><label for="j">Why do you need this file?</label></p>
<textarea id="j" name="justification" rows="5" maxlength="2000" required></textarea>
<p><button type="submit">Send the request</button></p></form>{% endif %}
<p>{{ contact }}</p>
</body></html>
"""


@functools.cache
def _template() -> jinja2.Template:
    return jinja2.Environment(autoescape=True).from_string(_PAGE)


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _render(request: web.Request, view: PublicView) -> web.Response:
    if _wants_json(request):
        return web.json_response(
            {
                "id": view.review_id, "path": view.path, "repo": view.repo, "state": view.state,
                "reasons": list(view.reasons), "since": view.since, "requests": view.requests,
                "decision": view.decision,
            }
        )  # fmt: skip
    contact = f"Questions: ask {services_of(request).settings.contact}."
    html = _template().render(v=view, contact=contact)
    return web.Response(text=html, content_type="text/html")


async def held_page(request: web.Request) -> web.Response:
    view = await services_of(request).review.public_view(review_id_of(request))
    return _render(request, view)


async def request_exception(request: web.Request) -> web.Response:
    review_id = review_id_of(request)
    body = await read_form_or_json(request, BodyLimits(max_bytes=MAX_FORM_BYTES, max_fields=20))
    values = body.strings("justification")
    text = values[0] if len(values) == 1 else None
    if text is None:
        raise InvalidInput("justification", "", "is required once: say why you need the file")
    review = services_of(request).review
    await review.request_exception(
        review_id, text, caller_of(request).key, request.remote or "unknown"
    )
    if _wants_json(request) or request.content_type == "application/json":
        return _render(request, await review.public_view(review_id))
    raise web.HTTPSeeOther(location=f"/held/{review_id}")
