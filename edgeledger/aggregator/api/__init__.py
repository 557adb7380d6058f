"""The aggregator's HTTP API (DESIGN.md 5): FastAPI on uvicorn, in the aggregator process.

Why FastAPI. The issue asks for an OpenAPI description: with FastAPI the typed
pydantic models and annotated parameters *are* the OpenAPI 3.1 document
(`/openapi.json`, browsable at /docs and /redoc), so the schema cannot drift from the
code, and schemathesis can test the server against it. Its validation answers a bad
parameter with the parameter's name and the reason (we reshape that body into our
ErrorBody). It is the most used and most actively maintained Python API framework,
on Starlette and uvicorn (ASGI, HTTP/1.1, keep-alive), with no C extensions to build
on an ARM board beyond pydantic-core's wheels. Flask or aiohttp would need a
hand-written or plugin-made OpenAPI; the standard library's http.server has neither
validation nor a production-grade server.

Layout: `app.py` (create_app, error contract, reader pool), `routes.py` (endpoints),
`views.py` (responses built from a StoreReader), `readings.py` (paged readings),
`senml.py` (SenML export, pure), `models.py` (pydantic models), `metrics.py`
(Prometheus), `serve.py` (uvicorn in a background thread). The agent never imports
this package: FastAPI, uvicorn and prometheus-client are the `aggregator` extra.
"""
