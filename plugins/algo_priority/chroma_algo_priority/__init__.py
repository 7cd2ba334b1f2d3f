"""algo_priority"""
