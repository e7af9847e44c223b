"""The lab exporter: one collector per source (sockets, host, processes, postgres, redis, nginx) and the
Locust plugin; `loadlab exporter` serves them (server.py), config.py reads what it is told to watch."""
