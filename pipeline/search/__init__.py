"""The INT8 search: which modules stay in FP32 (fallback), what each costs (node_cost) and the
quantization-aware fine-tune (qat).
"""
