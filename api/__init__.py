"""The HTTP API: FastAPI routes per audience over :class:`sop_engine.runtime.engine.Runtime`.

``api.app.create_app`` builds the application from a Runtime composed by the caller (the
``sop-engine`` command). Importing this package imports nothing of FastAPI, so that the
command line can use :mod:`api.users` without paying for the web framework.
"""
