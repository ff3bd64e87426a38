"""counter_ui"""
