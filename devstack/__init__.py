"""What Runway's demo, tests and benches stand on, kept out of the product (``dashboard/``,
``runbooks/``), which never imports it.

- ``launcher``: ``python -m devstack demo`` (``make demo``), every component on this machine;
- ``cluster``: private PostgreSQL clusters; ``redis_server``: a throwaway Redis;
- ``seeding``: realistic data for a ``migrations_target`` database; ``demo``: the demo's cast
  and databases;
- ``management/commands``: ``setup_demo`` and ``seed_target``, run as ``python -m devstack
  <command>`` (with ``devstack.settings``, the product's settings plus this app).
"""
