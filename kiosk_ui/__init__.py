"""kiosk_ui"""
