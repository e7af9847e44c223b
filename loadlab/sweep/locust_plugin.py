"""Given to every Locust a standalone sweep starts, beside the user's locustfiles (`locust -f this,theirs`):
it loads the lab's Locust plugin (loadlab/exporters/locust.py), whatever the locustfiles import, so each
step gets its samples. Nothing else imports it: importing Locust patches the standard library."""

import loadlab.exporters.locust  # noqa: F401
