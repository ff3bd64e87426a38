"""display_ui"""
