# The project's image for the Docker Compose twin (compose/compose.yml builds it from this folder): the demo
# app, the lab exporter and Locust, each container running one of them, all from the project's wheel.
FROM python:3.11.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY loadlab/ loadlab/
COPY exporters/ exporters/
COPY dashboards/ dashboards/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --home-dir /opt/loadlab --shell /usr/sbin/nologin loadlab
# The locustfiles and the lab's metrics plugin beside them, where the locust role puts them on a lab host.
COPY locustfiles/ /opt/loadlab/locustfiles/
RUN printf '%s\n' \
      '# Written by the Dockerfile, as the locust role writes it: the lab metrics and options in any locustfile.' \
      'import loadlab.exporters.locust  # noqa: F401' \
      > /opt/loadlab/locustfiles/lab_plugin.py
WORKDIR /opt/loadlab
# The app and Locust run as loadlab (uid 10001); compose.yml runs the exporter as root (it reads every process's
# open files, as the exporter role runs it).
USER 10001
CMD ["loadlab", "--help"]
