"""The live dashboard: a web page showing what flows, how fast, which model is live."""

from finscore.app.dashboard.server import Dashboard, start_dashboard
from finscore.app.dashboard.state import DashboardState

__all__ = ["Dashboard", "DashboardState", "start_dashboard"]
