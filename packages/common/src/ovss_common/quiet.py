"""The environment variables that keep every OVSS process from phoning home.

One list for the harness, its Ray tasks, every method worker and ``noxfile.py`` (which loads
this file by path: it imports nothing but the standard library).
"""

from __future__ import annotations

#: Telemetry off for Ray, Gradio and Hugging Face.
QUIET_ENV: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
