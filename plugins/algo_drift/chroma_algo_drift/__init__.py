"""algo_drift"""
