"""Talking to the lab's Grafana: where it is, pushing the dashboards, and best-effort sweep step annotations.

Grafana is optional: a sweep on a host without it (or with it down) runs and reports the same; it only
loses the step regions on the dashboards. Hence the annotator never raises.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

from loadlab.dashboards import DASHBOARDS, load
from loadlab.dashboards.builder import SWEEP_ANNOTATION_TAGS
from loadlab.errors import LabError, UserError
from loadlab.inputs import parse_url, read_text

log = logging.getLogger(__name__)

URL_ENV = "LOADLAB_GRAFANA_URL"
PASSWORD_FILE = Path("secrets") / "grafana_admin"
# The same file beside this checkout, for commands run from another folder.
_CHECKOUT_PASSWORD_FILE = Path(__file__).resolve().parent.parent / PASSWORD_FILE
DEFAULT_URL = "http://127.0.0.1:3000"
ADMIN_USER = "admin"
FOLDER_UID = "loadlab"  # the folder the provisioning role puts the dashboards in, too
FOLDER_TITLE = "loadlab"

# Everything that means "Grafana did not do it": HTTP errors, refused/closed connections, bad JSON.
_FAILURES = (GrafanaException, OSError, ValueError)


@dataclass(frozen=True)
class GrafanaSettings:
    """Where Grafana listens and how to log in."""

    url: str
    user: str = ADMIN_USER
    password: str | None = None

    def api(self, timeout: float) -> GrafanaApi:
        """A grafana-client API object; basic auth with the lab's admin when a password is known."""
        credential = (self.user, self.password) if self.password else None
        return GrafanaApi.from_url(self.url, credential=credential, timeout=timeout)


def resolve_settings(
    url: str | None = None,
    password_file: Path | None = None,
    user: str = ADMIN_USER,
    inventory_url: str | None = None,
) -> GrafanaSettings:
    """URL from the flag, else $LOADLAB_GRAFANA_URL, else the inventory's monitor host, else loopback:3000.

    The password is the one the grafana role generated into secrets/grafana_admin (here, or in this
    checkout); no such file means no credentials, and Grafana's 401 is then reported by the caller.
    """
    resolved = url or os.environ.get(URL_ENV) or inventory_url or DEFAULT_URL
    where = "--url" if url else f"${URL_ENV}" if os.environ.get(URL_ENV) else "Grafana URL"
    parse_url(resolved, where)
    if password_file is not None and not password_file.is_file():
        raise UserError(f"no Grafana password file at {password_file}")
    candidates = [password_file] if password_file else [PASSWORD_FILE, _CHECKOUT_PASSWORD_FILE]
    path = next((p for p in candidates if p.is_file()), None)
    password = read_text(path, "Grafana password file").strip() if path else None
    return GrafanaSettings(resolved.rstrip("/"), user, password)


def _ms(t: datetime | float) -> int:
    return int((t.timestamp() if isinstance(t, datetime) else float(t)) * 1000)


def step_tags(run_id: str, step: int, users: int) -> list[str]:
    """Tags of a step annotation: the dashboards find them by the first two, people by the rest."""
    return [*SWEEP_ANNOTATION_TAGS, f"run:{run_id}", f"step:{step}", f"users:{users}"]


class StepAnnotator:
    """Marks sweep steps on the Grafana dashboards, and stays quiet after the first failure.

    Call `annotate_step(...)` when a step starts (a point annotation appears at once) and again with `end`
    when it finishes (the same annotation becomes a region over the step). If Grafana is unreachable or
    refuses, one warning is logged and every later call returns None without trying again.
    """

    def __init__(self, settings: GrafanaSettings | None, timeout: float = 3.0) -> None:
        self.settings = settings
        self._api = settings.api(timeout) if settings else None
        self._open: dict[tuple[str, int], int] = {}
        self.disabled_reason: str | None = None if settings else "no Grafana configured"

    @classmethod
    def from_lab(cls, url: str | None = None, inventory_url: str | None = None) -> StepAnnotator:
        """The lab's Grafana as `loadlab grafana sync` finds it; none where none was provisioned from here."""
        try:
            settings = resolve_settings(url, inventory_url=inventory_url)
        except (UserError, OSError) as exc:
            log.warning("Grafana annotations off: %s", exc)
            return cls(None)
        if settings.password is None and url is None and not os.environ.get(URL_ENV):
            # The grafana role writes secrets/grafana_admin only where it installed Grafana.
            return cls(None)
        return cls(settings)

    @property
    def enabled(self) -> bool:
        return self._api is not None and self.disabled_reason is None

    def annotate_step(
        self,
        run_id: str,
        step: int,
        users: int,
        start: datetime | float,
        end: datetime | float | None = None,
        text: str = "",
    ) -> int | None:
        """Annotate a step's start (end=None) or its whole window; the Grafana annotation id, or None."""
        if not self.enabled:
            return None
        tags = step_tags(run_id, step, users)
        body = f"run {run_id} step {step}: {users} users" + (f"\n{text}" if text else "")
        key = (run_id, step)
        try:
            if end is not None and key in self._open:
                annotation_id = self._open.pop(key)
                self._api.annotations.partial_update_annotation(
                    annotation_id, time_from=_ms(start), time_to=_ms(end), tags=tags, text=body
                )
                return annotation_id
            answer = self._api.annotations.add_annotation(
                time_from=_ms(start), time_to=_ms(end) if end is not None else None, tags=tags, text=body
            )
            annotation_id = int(answer["id"])
        except (*_FAILURES, KeyError, TypeError) as exc:
            self.disabled_reason = _reason(exc)
            log.warning(
                "Grafana at %s did not take the step annotation (%s); the sweep goes on without annotations",
                self.settings.url if self.settings else "?",
                self.disabled_reason,
            )
            return None
        if end is None:
            self._open[key] = annotation_id
        return annotation_id


@dataclass(frozen=True)
class SyncedDashboard:
    """What Grafana answered for one pushed dashboard."""

    uid: str
    title: str
    version: int
    url: str


def _reason(exc: BaseException) -> str:
    """The last, human part of a connection error ("Connection refused"), not urllib3's whole chain."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, GrafanaException):
        tail = re.sub(r"^\[Errno -?\d+\]\s*", "", text.rsplit(":", 1)[-1].strip(" )'\""))
        return tail or text
    return text


def _call(settings: GrafanaSettings, what: str, func: Any, *args: Any, missing_ok: bool = False) -> Any:
    """One API call; errors become one line saying what to fix. With missing_ok, a 404 answers None."""
    try:
        return func(*args)
    except GrafanaClientError as exc:
        if missing_ok and exc.status_code == 404:
            return None
        if not isinstance(exc, GrafanaUnauthorizedError):
            raise LabError(f"Grafana at {settings.url} refused {what}: {_reason(exc)}") from exc
        raise LabError(
            f"Grafana at {settings.url} refused user {settings.user!r} while {what}: "
            f"check {PASSWORD_FILE} (written by the grafana role)"
        ) from exc
    except _FAILURES as exc:
        raise LabError(f"Grafana at {settings.url} failed while {what}: {_reason(exc)}") from exc


def sync_dashboards(
    settings: GrafanaSettings,
    dashboards: Mapping[str, dict[str, Any]],
    folder_uid: str = FOLDER_UID,
    timeout: float = 10.0,
) -> tuple[list[SyncedDashboard], list[dict[str, Any]]]:
    """Push every dashboard into the lab folder, overwriting; also list loadlab-tagged ones not pushed."""
    api = settings.api(timeout)
    _call(settings, "checking /api/health", api.client.GET, "/health")
    if (
        _call(settings, f"reading folder {folder_uid}", api.folder.get_folder, folder_uid, missing_ok=True)
        is None
    ):
        _call(settings, f"creating folder {folder_uid}", api.folder.create_folder, FOLDER_TITLE, folder_uid)
    synced = []
    for model in dashboards.values():
        payload = {
            "dashboard": {**model, "id": None},
            "folderUid": folder_uid,
            "message": "loadlab grafana sync",
            "overwrite": True,
        }
        answer = _call(settings, f"saving {model['uid']}", api.dashboard.update_dashboard, payload)
        synced.append(SyncedDashboard(answer["uid"], model["title"], int(answer["version"]), answer["url"]))
    search = partial(api.search.search_dashboards, tag="loadlab", type_="dash-db")
    listed = _call(settings, "listing dashboards", search)
    ours = {d.uid for d in synced}
    foreign = [d for d in listed if d.get("uid") not in ours]
    return synced, foreign


def dashboard_models(names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The committed dashboards (all, or the named ones) as Grafana receives them."""
    wanted = list(names) if names else list(DASHBOARDS)
    unknown = [n for n in wanted if n not in DASHBOARDS]
    if unknown:
        raise UserError(f"no dashboard {', '.join(unknown)}; known: {', '.join(DASHBOARDS)}")
    return {name: load(name) for name in wanted}
