"""The command line of a headless Chromium that a script or test drives over the DevTools
protocol: no sandbox, GPU, first-run UI or background traffic, and a DevTools port it picks
itself (written to ``<user-data-dir>/DevToolsActivePort``).

Shared by ``compose_test.py`` (its screenshots) and the test kit (``netsec_testing``, the browser
tests), which add their own window size and the flags their setting needs.
"""

HEADLESS_CHROMIUM = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--remote-debugging-port=0",
]
