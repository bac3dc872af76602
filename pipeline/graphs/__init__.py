"""The graph library: Q/DQ and FP16 writers, LayerNorm, the torch twin, queries over a loaded graph.

Nothing here knows a stage, a cache or a config: graphs in, graphs (or answers) out.
"""
