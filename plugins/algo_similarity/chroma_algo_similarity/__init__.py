"""algo_similarity"""
