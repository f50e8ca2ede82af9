"""The avatar service: REST API, data model, job queue and storage (see the API spec).

The desktop app reaches it only through :mod:`avatar_studio.client`, over HTTP, whether the service
runs embedded in the app's process or standalone (``avatar-studio serve``).
"""
