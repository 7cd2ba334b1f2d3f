"""algo_label_quality"""
