"""The lab's target service: users CRUD on PostgreSQL behind a Redis read-through cache, one process per port.

Run it with `python -m loadlab.app --host H --port P` (see loadlab/app/__main__.py for the environment).
"""
