"""store_clickhouse"""
