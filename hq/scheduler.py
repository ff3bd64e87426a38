"""APScheduler (3.x, AsyncIOScheduler) jobs: day-before reminders, booking no-shows and the personal-data purge."""

from __future__ import annotations

import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from hq.booking import mark_no_shows
from hq.core import HQ
from hq.notifications import enqueue_reminders, purge_personal_data

logger = logging.getLogger(__name__)


async def reminders_job(hq: HQ) -> int:
    now, lead = hq.now(), hq.settings.reminder_lead_s
    new = await hq.db.write(lambda c: enqueue_reminders(c, now, lead))
    if new:
        logger.info("queued %d reminders", new)
        hq.wake_notifier()
    return new


async def no_show_job(hq: HQ) -> int:
    """Bookings whose slot ended without a check-in become no-shows (bookings.status 'no_show')."""
    now = hq.now()
    marked = await hq.db.write(lambda c: mark_no_shows(c, now))
    if marked:
        logger.info("marked %d bookings as no-shows", marked)
    return marked


async def purge_job(hq: HQ) -> dict[str, int]:
    now, days = hq.now(), hq.settings.purge_after_days
    counts = await hq.db.write(lambda c: purge_personal_data(c, now, days))
    if any(counts.values()):
        logger.info("purged personal data: %s", counts)
    return counts


def start_scheduler(hq: HQ) -> AsyncIOScheduler:
    """Start the jobs on the running loop; the caller shuts the scheduler down."""
    scheduler = AsyncIOScheduler()
    every = hq.settings.scheduler_interval_s
    scheduler.add_job(reminders_job, "interval", seconds=every, args=[hq], id="reminders",
                      max_instances=1, coalesce=True)
    scheduler.add_job(no_show_job, "interval", seconds=every, args=[hq], id="no_shows",
                      max_instances=1, coalesce=True)
    scheduler.add_job(purge_job, "interval", seconds=max(every, 300), args=[hq], id="purge",
                      max_instances=1, coalesce=True)
    scheduler.start()
    return scheduler
