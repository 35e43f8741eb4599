"""Every application key, in one place."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from ..events import EventBus
from ..jobs.registry import Registry
from ..leases import LeaseHub
from ..metrics import Metrics
from ..scheduler import Scheduler
from ..store import LeaseStore, ScheduleStore, Store
from ..supervisor import Supervisor
from ..webhooks import Deliverer

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
#: the same store, as the lease hub sees it
LEASES = web.AppKey("leases", LeaseStore)
REGISTRY = web.AppKey("registry", Registry)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
EVENTS = web.AppKey("events", EventBus)
LEASE_HUB = web.AppKey("lease_hub", LeaseHub)
METRICS = web.AppKey("metrics", Metrics)
#: webhooks: the deliverer, and the check of a submission's callback
WEBHOOKS = web.AppKey("webhooks", Deliverer)
SCHEDULER = web.AppKey("scheduler", Scheduler)
#: the same store, as the scheduler sees it
SCHEDULE_STORE = web.AppKey("schedule_store", ScheduleStore)
