"""saveos_calendar: systemd OnCalendar expressions for an interval at a host's own slot.

    {{ 21600 | saveos_calendar(97, 3) }}  ->  ['*-*-* 01,07,13,19:37:00 UTC']

interval_s: seconds between runs; minute_of_day: the host's first slot (0-1439, UTC); day: the
host's weekday (0 = Monday) for weekly intervals. Intervals that divide a day (whole minutes)
give that many slots a day; a week gives one slot a week. Anything else returns [] so that the
role refuses it with a message naming the variable (a timer cannot express it exactly, and
rounding would make the API's late/overdue verdicts wrong).
"""

from __future__ import annotations

DAY_MINUTES = 1440
WEEK_S = 7 * 86400
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def saveos_calendar(interval_s, minute_of_day, day=0):
    """The OnCalendar expressions ([] when the interval has no exact calendar)."""
    interval_s, first = int(interval_s), int(minute_of_day) % DAY_MINUTES
    if interval_s == WEEK_S:
        return [f"{WEEKDAYS[int(day) % 7]} *-*-* {first // 60:02d}:{first % 60:02d}:00 UTC"]
    if interval_s <= 0 or interval_s % 60 or DAY_MINUTES % (interval_s // 60):
        return []
    step = interval_s // 60
    if step == 60:
        return [f"*-*-* *:{first % 60:02d}:00 UTC"]
    if step < 60:  # several a hour: the same minutes every hour
        return [f"*-*-* *:{first % step:02d}/{step:02d}:00 UTC"]
    slots = sorted((first + k * step) % DAY_MINUTES for k in range(DAY_MINUTES // step))
    if step % 60 == 0:  # whole hours: one expression, the host's minute in each slot's hour
        hours = ",".join(f"{s // 60:02d}" for s in slots)
        return [f"*-*-* {hours}:{first % 60:02d}:00 UTC"]
    return [f"*-*-* {s // 60:02d}:{s % 60:02d}:00 UTC" for s in slots]


class FilterModule:
    def filters(self):
        return {"saveos_calendar": saveos_calendar, "saveos_slot_offset": saveos_slot_offset}


def saveos_slot_offset(interval_s, minute_of_day, day=0):
    """Seconds after each multiple of interval_s since the epoch (a Thursday, 00:00 UTC) where
    the host's slot falls: what the supervised daemon waits for, the same instants as the
    calendar above."""
    interval_s, first = int(interval_s), int(minute_of_day) % DAY_MINUTES
    if interval_s == WEEK_S:
        return ((int(day) - 3) % 7 * 86400 + first * 60) % WEEK_S
    return first * 60 % interval_s if interval_s > 0 else 0
