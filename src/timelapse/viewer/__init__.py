"""``timelapse view``: a local time-travel viewer of a trace in the browser (docs/view.md).

``index.py`` reads the trace once into compact arrays and compressed pages, ``api.py`` answers the
page's questions from them, ``server.py`` serves both on 127.0.0.1, ``static/`` is the page.
"""

from timelapse.viewer.server import ViewServer, run_view

__all__ = ["ViewServer", "run_view"]
