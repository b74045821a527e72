"""The read-only web dashboard: what runs where, what changed, what is waiting for promotion.

``data`` builds the env x app matrix, ``apppage`` one app's page, ``auth`` decides who may read,
``server`` is the aiohttp + Jinja2 shell serving ``/ui/`` and ``/api/v1/``.
"""
