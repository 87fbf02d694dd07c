"""The web page of the service (``/ui``): upload spectra, see the prediction, its evidence and the model.

:func:`xastopo.web.app.create_app` builds a small Starlette app that ``serving/service.py`` mounts on
the BentoML service (``@bentoml.asgi_app``), so the page runs in the service's own process, behind the
same gate (bearer token, body size) and over the same inference halves; its static files (HTML, JS,
CSS, written here: no build step, nothing fetched from outside) live in ``static/``.
"""
