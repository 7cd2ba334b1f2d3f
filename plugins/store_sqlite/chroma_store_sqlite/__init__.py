"""store_sqlite"""
