"""What the kiosk, display and counter apps share: start-up, the app shell, list widgets.

Nothing here imports Kivy at package import time: ``cli.configure_kivy`` must run before
``kivy.core.window`` is imported.
"""
