"""Builds every activity of the product from settings: the one place that creates outside-system clients.

Each outside system has a section below that builds its client(s) from its own ecosystem's configuration and
returns the bound activity methods. Tests build activity classes themselves and hand in other clients.
"""

from __future__ import annotations

from typing import Callable

from activities.notify import NotificationActivities, RecordingChannel
from core.config import Settings


def notification_channels(settings: Settings) -> list:
    channels: list = []
    for name in settings.notify_channels:
        if name == "recording":
            channels.append(RecordingChannel(settings.events_file))
    return channels


def build_activities(settings: Settings) -> list[Callable]:
    notifier = NotificationActivities(notification_channels(settings))
    return [notifier.notify]
